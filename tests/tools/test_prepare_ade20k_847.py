"""ovdense prepare ade20k_847 (ovdense.data.converters.ade20k_847):
ADE20K full release -> CAT-Seg's 847-class layout."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdense.data.converters import ade20k_847 as pad
from ovdense.data.prepare import read_class_file

NAMES847 = read_class_file("cls_ade20k847.txt")

# ADE object class (1-based index into objectnames) -> expected 847 index, 65535 = not a class
N_OBJECTS = 700
EXPECTED = {1: 0, 2: 65535, 261: 5, 600: 846, 513: 1, 700: 123}


def _objectnames() -> list[str]:
    names = [f"no such class {k}" for k in range(1, N_OBJECTS + 1)]
    for k, target in EXPECTED.items():
        if target != 65535:
            names[k - 1] = NAMES847[target]
    return names


def _encode(cls: np.ndarray, rng) -> np.ndarray:
    """ADE's _seg.png encoding: R = cls // 256 * 10 (+ 0..9), G = cls % 256, B = instances."""
    r = cls // 256 * 10 + rng.integers(0, 10, cls.shape)
    g = cls % 256
    b = rng.integers(0, 256, cls.shape)
    return np.stack([r, g, b], -1).astype(np.uint8)


@pytest.fixture()
def ade(tmp_path, write_image):
    root = tmp_path / "ADE20K_2021_17_01"
    rng = np.random.default_rng(0)
    choices = np.array([0, *EXPECTED, 701, 2000])  # 701+: beyond objectnames
    classes = {}
    files = []
    for name, folder in [
        ("ADE_val_00000001", "images/ADE/validation/urban/street"),
        ("ADE_val_00000002", "images/ADE/validation/home_or_hotel/bedroom"),
        ("ADE_train_00000001", "images/ADE/training/urban/street"),
    ]:
        d = root / folder
        cls = rng.choice(choices, (9, 11))
        cls.flat[: len(choices)] = choices
        write_image(d / f"{name}_seg.png", _encode(cls, rng))
        write_image(d / f"{name}.jpg", rng.integers(0, 256, (9, 11, 3), dtype=np.uint8))
        classes[name] = cls
        files.append((name, folder))
    index = {
        "objectnames": _objectnames(),
        "filename": [f"{n}.jpg" for n, _ in files],
        "folder": [f"ADE20K_2021_17_01/{f}" for _, f in files],
    }
    with open(root / "index_ade20k.pkl", "wb") as fh:
        pickle.dump(index, fh)
    return root, classes


def test_decode_and_lut():
    rng = np.random.default_rng(1)
    cls = rng.integers(0, 3688, (5, 7))
    np.testing.assert_array_equal(pad.decode_ade_seg(_encode(cls, rng)), cls)
    lut, unmatched, matched = pad.build_lut(_objectnames(), NAMES847)
    assert matched == 5 and len(unmatched) == 847 - 5
    assert lut[0] == 65535 and len(lut) == N_OBJECTS + 1
    assert {k: int(lut[k]) for k in EXPECTED} == EXPECTED


def test_prepare_writes_tif_and_images(tmp_path, ade):
    root, classes = ade
    data = tmp_path / "data"
    s = pad.prepare_ade20k_847(root, data, progress=False)
    assert (s.written, s.skipped, s.failed) == (2, 0, 0)
    assert any("842 of 847 classes match no ADE object name" in w for w in s.warnings)
    assert any("beyond objectnames" in w for w in s.warnings)
    out = data / "ADE20K_2021_17_01"
    ann = out / "annotations_detectron2" / "validation"
    assert sorted(p.name for p in ann.iterdir()) == ["ADE_val_00000001.tif", "ADE_val_00000002.tif"]
    table = {0: 65535, **EXPECTED, 701: 65535, 2000: 65535}
    for name in ("ADE_val_00000001", "ADE_val_00000002"):
        im = Image.open(ann / f"{name}.tif")
        assert im.mode.startswith("I;16")
        got = np.array(im).astype(np.uint16)
        np.testing.assert_array_equal(got, np.vectorize(table.get)(classes[name]))
        img = out / "images_detectron2" / "validation" / f"{name}.jpg"
        src = next(root.rglob(f"{name}.jpg"))
        assert img.is_file() and not img.is_symlink()
        assert img.read_bytes() == src.read_bytes()
    s = pad.prepare_ade20k_847(root, data, progress=False)
    assert (s.written, s.skipped) == (0, 2)


def test_cli_symlink_and_errors(tmp_path, ade, capsys):
    root, _ = ade
    data = tmp_path / "data"
    argv = ["--ade-root", str(root), "--data-root", str(data), "--image-mode", "symlink"]
    assert pad.main(argv) == 0
    assert "2 written" in capsys.readouterr().out
    assert (
        data / "ADE20K_2021_17_01/images_detectron2/validation/ADE_val_00000001.jpg"
    ).is_symlink()
    # unreadable index: say which file is expected
    (root / "index_ade20k.pkl").write_bytes(b"garbage")
    assert pad.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "index_ade20k.pkl" in err and "ADE20K_2021_17_01.zip" in err
    (root / "index_ade20k.pkl").unlink()
    assert pad.main(argv) == 2
    assert "index_ade20k.pkl" in capsys.readouterr().err
    assert pad.main(["--ade-root", str(tmp_path / "none"), "--data-root", str(data)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "none" / "images" / "ADE" / "validation") in err


class _RunsCode:
    """A pickle payload that would create a file when unpickled by plain pickle.load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_index_pickle_cannot_run_code(tmp_path, ade, capsys):
    root, _ = ade
    marker = tmp_path / "pwned"
    with open(root / "index_ade20k.pkl", "rb") as fh:
        index = pickle.load(fh)
    index["objectnames"] = [*index["objectnames"], _RunsCode(marker)]
    with open(root / "index_ade20k.pkl", "wb") as fh:
        pickle.dump(index, fh)
    argv = ["--ade-root", str(root), "--data-root", str(tmp_path / "data")]
    assert pad.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "refused to load 'pathlib" in err and "index_ade20k.pkl" in err
    assert not marker.exists()
    # numpy arrays and plain data still load
    from ovdense.data.prepare import safe_pickle_load

    data = {"a": np.arange(6, dtype=np.int32).reshape(2, 3), "b": [np.float64(1.5), "x"]}
    with open(tmp_path / "ok.pkl", "wb") as fh:
        pickle.dump(data, fh)
    loaded = safe_pickle_load(tmp_path / "ok.pkl")
    assert np.array_equal(loaded["a"], data["a"]) and loaded["b"] == [1.5, "x"]


def test_missing_seg_png_counts_as_failed(tmp_path, ade):
    root, _ = ade
    next(root.rglob("ADE_val_00000002_seg.png")).unlink()
    s = pad.prepare_ade20k_847(root, tmp_path / "data", progress=False)
    assert (s.written, s.failed) == (1, 1)
    assert any("ADE_val_00000002_seg.png" in w for w in s.warnings)


def test_output_loads_through_the_catalog(tmp_path, ade):
    from ovdense.data import build_semseg_dataset

    root, classes = ade
    data = tmp_path / "data"
    pad.prepare_ade20k_847(root, data, progress=False)
    ds = build_semseg_dataset("ade20k_847", data)
    assert len(ds) == 2 and ds[1]["id"] == "ADE_val_00000002"
    table = {0: 65535, **EXPECTED, 701: 65535, 2000: 65535}
    exp = np.vectorize(table.get)(classes["ADE_val_00000002"])
    np.testing.assert_array_equal(ds[1]["label"], exp)


def test_index_entries_missing_on_disk_are_reported(tmp_path, ade):
    root, _ = ade
    with open(root / "index_ade20k.pkl", "rb") as fh:
        index = pickle.load(fh)
    index["filename"].append("ADE_val_00000003.jpg")
    index["folder"].append("ADE20K_2021_17_01/images/ADE/validation/urban/street")
    with open(root / "index_ade20k.pkl", "wb") as fh:
        pickle.dump(index, fh)
    s = pad.prepare_ade20k_847(root, tmp_path / "data", progress=False)
    assert s.written == 2
    assert any("1 validation image(s) of the index are not on disk" in w for w in s.warnings)
