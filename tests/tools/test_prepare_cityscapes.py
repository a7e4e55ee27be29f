"""ovdense prepare cityscapes (tools/prepare_cityscapes.py): gtFine labelIds -> labelTrainIds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdense.data.converters import cityscapes as pcs
from ovdense.data.prepare import read_class_file

# the standard table, written independently: label id -> train id (others 255)
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
             24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip


@pytest.fixture()
def fake_cityscapes(write_image, write_blank_image) -> Callable[[Path], dict[str, np.ndarray]]:
    """``fake_cityscapes(root)``: two val frames under ``root``; returns their labelIds."""

    def make(root: Path) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        out = {}
        for city, frame in [
            ("frankfurt", "frankfurt_000000_000294"),
            ("lindau", "lindau_000001_19"),
        ]:
            ids = rng.integers(0, 40, (6, 8)).astype(np.uint8)
            ids.flat[:36] = np.arange(36)
            d = root / "gtFine" / "val" / city
            write_image(d / f"{frame}_gtFine_labelIds.png", ids)
            write_image(d / f"{frame}_gtFine_color.png", ids)  # not a labelIds file
            img = root / "leftImg8bit" / "val" / city
            write_blank_image(img / f"{frame}_leftImg8bit.png", (6, 8))
            out[f"{city}/{frame}"] = ids
        return out

    return make


def test_table_and_class_order():
    lut = pcs.train_id_lut()
    assert {v: int(lut[v]) for v in range(256) if lut[v] != 255} == TRAIN_IDS
    names = read_class_file("cls_city_scapes.txt")
    assert [n.replace(" ", "") for n in pcs.train_id_names()] == names


def test_in_place_conversion_and_rerun(tmp_path, capsys, fake_cityscapes):
    data = tmp_path / "data"
    ids = fake_cityscapes(data / "cityscapes")
    assert pcs.main(["--data-root", str(data)]) == 0
    out = capsys.readouterr().out
    assert "2 written, 0 skipped" in out and "0 warning(s)" in out
    for key, arr in ids.items():
        p = data / "cityscapes" / "gtFine" / "val" / f"{key}_gtFine_labelTrainIds.png"
        got = np.array(Image.open(p))
        expected = np.vectorize(lambda v: TRAIN_IDS.get(int(v), 255))(arr)
        np.testing.assert_array_equal(got, expected)
        assert got.flat[7] == 0 and got.flat[33] == 18 and got.flat[0] == 255
    assert pcs.main(["--data-root", str(data)]) == 0
    assert "0 written, 2 skipped" in capsys.readouterr().out
    assert pcs.main(["--data-root", str(data), "--overwrite"]) == 0
    assert "2 written, 0 skipped" in capsys.readouterr().out


def test_separate_tree_links_images(tmp_path, fake_cityscapes):
    src = tmp_path / "downloads"
    fake_cityscapes(src)
    data = tmp_path / "data"
    s = pcs.prepare_cityscapes(src, data, link_images="symlink", progress=False)
    assert (s.written, s.warnings) == (2, [])
    img = data / "cityscapes/leftImg8bit/val/lindau/lindau_000001_19_leftImg8bit.png"
    assert img.is_symlink() and img.resolve() == (src / img.relative_to(data / "cityscapes"))
    lab = data / "cityscapes/gtFine/val/lindau/lindau_000001_19_gtFine_labelTrainIds.png"
    assert lab.is_file()


def test_missing_inputs(tmp_path, capsys):
    assert pcs.main(["--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "gtFine_trainvaltest.zip" in err
    assert str(tmp_path / "cityscapes" / "gtFine" / "val") in err
    (tmp_path / "cityscapes" / "gtFine" / "val").mkdir(parents=True)
    assert pcs.main(["--data-root", str(tmp_path)]) == 2
    assert "_gtFine_labelIds.png" in capsys.readouterr().err


def test_output_loads_through_the_catalog(tmp_path, fake_cityscapes):
    from ovdense.data import build_semseg_dataset

    data = tmp_path / "data"
    ids = fake_cityscapes(data / "cityscapes")
    pcs.prepare_cityscapes(data / "cityscapes", data, progress=False)
    ds = build_semseg_dataset("cityscapes", data)
    assert [ds[k]["id"] for k in range(len(ds))] == sorted(ids)
    for k, key in enumerate(sorted(ids)):
        exp = np.vectorize(lambda v: TRAIN_IDS.get(int(v), 255))(ids[key])
        np.testing.assert_array_equal(ds[k]["label"], exp)
