"""``ovdense benchmark``'s image section runs every new training-free method (ResCLIP, SC-CLIP,
CorrCLIP with synthetic masks, Trident, SAM 3 when its package is there) with tiny random parts,
and its per-stage breakdown adds up to the measured total."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from ovdense.cli import benchmark
from ovdense.sam import GridMaskSource

# the tiny bundled tower has 6 blocks: ResCLIP / SC-CLIP read earlier blocks than their defaults
KWARGS = {
    "resclip": {"rcs_layers": [3]},
    "scclip": {"pre_adjust_idx": 3, "post_adjust_idx": 1, "multi_start_idx": 1, "multi_end_idx": 4},
}
SMALL = ["--model", "ovdense-tiny-vit", "--device", "cpu", "--method-parts", "tiny"]
SMALL += ["--image-size", "48", "64", "--short-side", "64", "--window", "64", "--stride", "32"]
SMALL += ["--repeats", "1", "--skip-text", "--strategy-kwargs", json.dumps(KWARGS)]


@pytest.fixture()
def one_thread():
    """``--threads 1`` (tiny models: threads only contend on a loaded machine), restored after."""
    before = torch.get_num_threads()
    yield ["--threads", "1"]
    torch.set_num_threads(before)


def test_every_new_method_yields_a_row_and_a_breakdown(tmp_path, capsys, one_thread):
    out = tmp_path / "methods.json"
    names = ["resclip", "scclip", "corrclip", "trident", "sam3"]
    argv = [*SMALL, *one_thread, "--strategies", *names, "--json", str(out)]
    assert benchmark.main(argv) == 0
    res = json.loads(out.read_text())
    printed = capsys.readouterr().out
    have_sam3 = benchmark.sam3_available() is None
    expected = names if have_sam3 else names[:-1]
    assert [r["strategy"] for r in res["image"]] == expected
    if not have_sam3:
        assert "(sam3 skipped: " in printed
    for r in res["image"]:
        assert r["s_per_image"] > 0 and r["images_per_s"] == pytest.approx(1 / r["s_per_image"])
        assert r["achieved_gflops"] > 0 and r["peak_mem_mb"] > 0
        st = r["stages"]
        assert st["total_s"] > 0 and all(t >= 0 for t in st["stages"].values())
        # self times: the stages of one run add up to its wall time (the clock's overhead apart)
        assert sum(st["stages"].values()) == pytest.approx(st["total_s"], rel=0.05, abs=2e-3)
        assert st["stages"]["CLIP tower" if r["strategy"] != "sam3" else "SAM 3 backbone"] > 0
    rows = {r["strategy"]: r for r in res["image"]}
    corr, tri = rows["corrclip"]["stages"], rows["trident"]["stages"]
    assert {"VFM (DINO)", "mask generation", "last block (method)"} <= set(corr["stages"])
    assert {"VFM (DINO)", "SAM encoder", "aggregation", "refinement"} <= set(tri["stages"])
    assert corr["sam_masks_s"] > 0 and corr["sam_masks"] == "tiny SAM ViT-B"
    assert "synthetic masks" in rows["corrclip"]["parts"] and "tiny" in rows["trident"]["parts"]
    assert "| corrclip* |" in printed and "| trident* |" in printed and "| resclip |" in printed
    assert "## Where the time goes" in printed


def test_stage_clock_charges_self_time():
    """Nested stages: the outer one is charged only its own time; the stages sum to the total."""
    clock = benchmark.StageClock(torch.device("cpu"))

    class Thing:
        def inner(self):
            time.sleep(0.02)

        def outer(self):
            time.sleep(0.01)
            self.inner()

    thing = Thing()
    clock.wrap(thing, "inner", "inner")
    clock.wrap(thing, "outer", "outer")
    total, stages = clock.run(thing.outer)
    clock.unwrap_all()
    assert "inner" not in vars(thing) and "outer" not in vars(thing)
    assert stages["inner"] >= 0.02 and 0.01 <= stages["outer"] < 0.02 + 0.01
    assert sum(stages.values()) == pytest.approx(total, abs=1e-3)


def test_grid_mask_source_tiles_the_image():
    masks = GridMaskSource(2, 3)(np.zeros((5, 7, 3), np.uint8))
    assert masks.shape == (6, 5, 7) and bool((masks.sum(0) == 1).all())  # a partition
    rows = torch.tensor([0, 0, 0, 1, 1])  # i * 2 // 5
    cols = torch.tensor([0, 0, 0, 1, 1, 2, 2])  # j * 3 // 7
    expected = (rows[:, None] * 3 + cols[None, :])[None] == torch.arange(6)[:, None, None]
    assert torch.equal(masks, expected)
    with pytest.raises(ValueError, match="rows and cols"):
        GridMaskSource(0, 2)
