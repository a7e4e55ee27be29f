"""tools/eval_seg.py end to end: a tiny random CLIP on a synthetic ADE20K layout."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes import write_ade_layout
from PIL import Image

from ovdense.utils.visualizer import load_label_png

ROOT = Path(__file__).resolve().parents[2]


def _tool(name):
    """The tool's module in the package (``tools/<name>.py`` is a wrapper around it)."""
    return importlib.import_module(f"ovdense.cli.{name}")


@pytest.fixture()
def setup(tmp_path, tiny_preset):
    preset = tiny_preset("sclip")
    write_ade_layout(tmp_path / "data")
    return preset, tmp_path / "data", tmp_path / "out"


def _brute_force_miou(out: Path, data: Path) -> float:
    """mIoU from the written predictions and the raw ADE labels, with explicit loops."""
    tp, fp, fn = np.zeros(150), np.zeros(150), np.zeros(150)
    for pred_file in sorted((out / "preds").glob("*.png")):
        pred = load_label_png(pred_file).astype(np.int64)
        raw = np.array(
            Image.open(data / "ADEChallengeData2016/annotations/validation" / pred_file.name)
        ).astype(np.int64)
        for c in range(150):
            valid = raw != 0
            gt_c = (raw - 1 == c) & valid
            pr_c = (pred == c) & valid
            tp[c] += np.sum(gt_c & pr_c)
            fp[c] += np.sum(~gt_c & pr_c)
            fn[c] += np.sum(gt_c & ~pr_c)
    union = tp + fp + fn
    return float(np.mean(tp[union > 0] / union[union > 0]) * 100)


def test_eval_end_to_end_and_resume(setup, capsys):
    preset, data, out = setup
    tool = _tool("eval_seg")
    args = [
        "--config",
        str(preset),
        "--dataset",
        "ade20k_150",
        "--data-root",
        str(data),
        "--output",
        str(out),
        "--device",
        "cpu",
    ]
    assert tool.main(args + ["--limit", "2"]) == 0
    first = json.loads((out / "results.json").read_text())
    assert first["num_images"] == 2 and first["resumed_images"] == 0
    assert tool.main(args) == 0  # "interrupted" after 2 images: resume scores the rest
    res = json.loads((out / "results.json").read_text())
    assert res["num_images"] == 4 and res["resumed_images"] == 2
    assert len(list((out / "preds").glob("*.png"))) == 4
    m = res["metrics"]
    assert m["mIoU"] == pytest.approx(_brute_force_miou(out, data), abs=1e-6)
    assert set(res["versions"]) >= {"ovdense", "torch", "open_clip"}
    assert (out / "config.yaml").is_file() and "mIoU" in (out / "results.md").read_text()
    # classes absent from GT and predictions are NaN in memory, null in JSON
    assert any(v is None for v in m["IoU"].values())
    assert "mIoU" in capsys.readouterr().out


def test_bad_files_are_skipped_and_counted(setup):
    preset, data, out = setup
    lab_dir = data / "ADEChallengeData2016/annotations/validation"
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(lab_dir / "ADE_val_00000001.png")
    tool = _tool("eval_seg")
    rc = tool.main(
        [
            "--config",
            str(preset),
            "--dataset",
            "ade20k_150",
            "--data-root",
            str(data),
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["num_images"] == 3 and len(res["skipped"]) == 1
    assert "ADE_val_00000001" in res["skipped"][0]


def test_missing_root_is_a_clear_error(setup, capsys, tmp_path):
    from ovdense.utils.cli import run_cli

    preset, _, out = setup
    rc = run_cli(
        _tool("eval_seg").main,
        [
            "--config",
            str(preset),
            "--dataset",
            "ade20k_150",
            "--data-root",
            str(tmp_path / "nowhere"),
            "--output",
            str(out),
        ],
    )
    err = capsys.readouterr().err
    assert rc == 2 and "nowhere" in err and "Traceback" not in err


def test_torchrun_two_processes_match_one(setup, tmp_path):
    preset, data, out = setup
    base = [
        str(ROOT / "tools" / "eval_seg.py"),
        "--config",
        str(preset),
        "--dataset",
        "ade20k_150",
        "--data-root",
        str(data),
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, *base, "--output", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29517",
            *base,
            "--output",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert multi.returncode == 0, multi.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())["metrics"]
    two = json.loads((tmp_path / "two" / "results.json").read_text())["metrics"]
    assert one == two


def test_eval_all_table(setup, tmp_path):
    preset, data, out = setup
    rc = _tool("eval_all").main(
        [
            "--config",
            str(preset),
            "--datasets",
            "voc21",
            "ade20k_150",
            "--data-root",
            str(data),
            "--output",
            str(tmp_path / "all"),
        ]
    )
    assert rc == 0
    table = json.loads((tmp_path / "all" / "table.json").read_text())
    assert table["mIoU"]["voc21"] is None  # not on disk: reported, the rest still ran
    ade = json.loads((tmp_path / "all" / "ade20k_150" / "results.json").read_text())
    assert table["mIoU"]["ade20k_150"] == pytest.approx(ade["metrics"]["mIoU"])
    md = (tmp_path / "all" / "table.md").read_text()
    assert "| VOC21 | ADE | Avg |" in md and "–" in md


def test_eval_all_shapes_groups(tmp_path, monkeypatch):
    """``--datasets shapes_seg``: seen / held-out columns equal the per-group means of the
    per-class IoUs in results.json."""
    import ovdense.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "VAL_IMAGES", 4)
    rc = _tool("eval_all").main(
        [
            "--config",
            "shapes/vanilla",
            "--datasets",
            "shapes_seg",
            "--data-root",
            str(tmp_path / "data"),
            "--output",
            str(tmp_path / "all"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    table = json.loads((tmp_path / "all" / "table.json").read_text())
    res = json.loads((tmp_path / "all" / "shapes_seg" / "results.json").read_text())["metrics"]
    assert res["num_pixels"] == 4 * synthetic.VAL_SIZE**2
    names = synthetic.class_names()
    for group, members in synthetic.class_groups().items():
        ious = [res["IoU"][names[c]] for c in members]
        ious = [v for v in ious if v is not None]
        expected = sum(ious) / len(ious) if ious else None
        got = table["mIoU_groups"]["shapes_seg"][group]
        assert got == (pytest.approx(expected) if expected is not None else None)
    md = (tmp_path / "all" / "table.md").read_text()
    assert "| Shapes | Shapes seen | Shapes held-out | Avg |" in md


TINY_CORRCLIP_PRESET = """
from ovdense.config import LazyCall as L
from ovdense.modeling.clip import load_clip
from ovdense.modeling.segmentors import TrainingFreeSegmentor

model = L(TrainingFreeSegmentor)(
    clip=L(load_clip)(config={config!r}, seed=0),
    strategy="corrclip",
    strategy_kwargs={{"vfm": "dino_vitb8", "vfm_kwargs": {{"pretrained": False, "img_size": 32,
        "embed_dim": 24, "depth": 2, "num_heads": 2, "feature": "query_key"}}}},
    templates="single",
    short_side=40,
    window=32,
    stride=16,
    label_refiner="region_vote",
)
"""


def _write_regions(folder: Path, images: Path, shift: int = 0) -> dict[str, np.ndarray]:
    """Three vertical bands (ids 2, 4, 6; the first ``6 + shift`` columns without a mask) per
    image, in CorrCLIP's layout."""
    folder.mkdir(parents=True)
    out = {}
    for path in sorted(images.glob("*.jpg")):
        w, h = Image.open(path).size
        r = np.zeros((h, w), np.int64)
        r[:, 6 + shift : 20] = 2
        r[:, 20:32] = 4
        r[:, 32:] = 6
        np.savez(folder / f"{path.stem}.npz", instance_mask=r)
        out[path.stem] = r
    return out


def test_eval_reads_region_maps_generated_beforehand(tmp_path, tiny_clip_config, capsys):
    """``--regions DIR``: CorrCLIP's masks from files (its data/region_masks layout), the
    preset's mask source not needed; the vote made every region one label; the folder is part
    of the fingerprint (other masks do not reuse the predictions)."""
    from ovdense.utils.cli import run_cli

    preset = tmp_path / "tiny_corrclip.py"
    preset.write_text(TINY_CORRCLIP_PRESET.format(config=tiny_clip_config))
    data = write_ade_layout(tmp_path / "data")
    images = data / "ADEChallengeData2016" / "images" / "validation"
    regions = _write_regions(tmp_path / "masks", images)
    out = tmp_path / "out"
    tool = _tool("eval_seg")
    args = ["--config", str(preset), "--dataset", "ade20k_150", "--data-root", str(data)]
    args += ["--output", str(out), "--device", "cpu"]
    assert tool.main([*args, "--regions", str(tmp_path / "masks")]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["num_images"] == 4
    for stem, r in regions.items():
        pred = load_label_png(out / "preds" / f"{stem}.png")
        for v in (2, 4, 6):
            assert len(np.unique(pred[r == v])) == 1
    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert fingerprint["regions"] == str((tmp_path / "masks").resolve())
    # other masks into the same output folder: refused, not mixed
    _write_regions(tmp_path / "masks2", images, shift=2)
    capsys.readouterr()
    code = run_cli(tool.main, [*args, "--regions", str(tmp_path / "masks2")])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    # a missing map is one clear error naming the file expected
    (tmp_path / "masks2" / "ADE_val_00000002.npz").unlink()
    code = run_cli(tool.main, [*args, "--regions", str(tmp_path / "masks2"), "--overwrite"])
    assert code == 2 and "No region map for ADE_val_00000002.jpg" in capsys.readouterr().err
