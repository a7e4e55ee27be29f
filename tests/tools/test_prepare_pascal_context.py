"""ovdense prepare pascal_context (ovdense.data.converters.pascal_context):
official .mat LabelMaps -> 60-class and 459-class PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from ovdense.data.converters import pascal_context as ppc
from ovdense.data.prepare import read_class_file

NAMES459 = read_class_file("cls_context459.txt")


def _labels_txt(path: Path, rename: dict[str, str] | None = None) -> Path:
    rename = rename or {}
    path.write_text("".join(f"{i}: {rename.get(n, n)}\n" for i, n in enumerate(NAMES459, 1)))
    return path


@pytest.fixture()
def context(tmp_path):
    root = tmp_path / "pascal_context"
    (root / "trainval").mkdir(parents=True)
    _labels_txt(root / "labels.txt")
    rng = np.random.default_rng(0)
    maps = {}
    for i, (h, w) in enumerate([(7, 9), (5, 6), (4, 4)]):
        lab = rng.integers(0, 460, (h, w)).astype(np.uint16)
        lab.flat[:5] = [0, 1, 2, 458, 459]  # unlabeled, accordion, aeroplane, wood, last class
        maps[f"2008_00000{i}"] = lab
        savemat(root / "trainval" / f"2008_00000{i}.mat", {"LabelMap": lab})
    return root, maps


def _expected_60(lab: np.ndarray) -> np.ndarray:
    table = {idx: k for k, idx in enumerate(ppc.DETAIL_API_59, start=1)}
    return np.vectorize(lambda v: table.get(int(v), 0))(lab).astype(np.uint8)


def test_tables():
    labels = {i: n for i, n in enumerate(NAMES459, 1)}
    lut, unmatched = ppc.context59_lut(labels, read_class_file("cls_context59.txt"))
    assert unmatched == []
    assert tuple(int(i) for i in np.flatnonzero(lut)) == ppc.DETAIL_API_59
    assert lut[2] == 1 and lut[9] == 2 and lut[458] == 59 and lut[1] == 0 and lut[459] == 0
    lab = np.array([[0, 1, 2], [459, 460, 100]], np.uint16)
    np.testing.assert_array_equal(
        ppc.convert_459(lab), np.array([[65535, 0, 1], [458, 65535, 99]], np.uint16)
    )


def test_prepare_writes_60_and_459(tmp_path, context):
    root, maps = context
    data = tmp_path / "data"
    s = ppc.prepare_pascal_context(root / "trainval", root / "labels.txt", data, progress=False)
    assert (s.written, s.skipped, s.failed) == (7, 0, 0)  # 3 x 2 labels + val.txt
    base = data / "VOCdevkit" / "VOC2010"
    for i, lab in maps.items():
        out60 = Image.open(base / "SegmentationClassContext" / f"{i}.png")
        out459 = Image.open(base / "SegmentationClassContext459" / f"{i}.png")
        assert out60.mode == "L" and out459.mode.startswith("I;16")
        a60, a459 = np.array(out60), np.array(out459).astype(np.uint16)
        np.testing.assert_array_equal(a60, _expected_60(lab))
        expected459 = np.where(lab == 0, 65535, lab.astype(np.int64) - 1).astype(np.uint16)
        np.testing.assert_array_equal(a459, expected459)
        assert list(a60.flat[:5]) == [0, 0, 1, 59, 0]
        assert list(a459.flat[:5]) == [65535, 0, 1, 457, 458]
    split = base / "ImageSets" / "SegmentationContext" / "val.txt"
    assert split.read_text().split() == sorted(maps)
    # images are not there: a warning says where to put them
    assert any("JPEGImages" in w for w in s.warnings)
    # re-run skips everything
    s = ppc.prepare_pascal_context(root / "trainval", root / "labels.txt", data, progress=False)
    assert (s.written, s.skipped) == (0, 7)


def test_split_file_only_459_and_images(tmp_path, context, capsys, write_blank_image):
    root, maps = context
    split = tmp_path / "val.txt"
    split.write_text("2008_000002\n2008_000000\n\nmissing_id\n")
    jpeg = tmp_path / "VOC2010_JPEGImages"
    for i, lab in maps.items():
        write_blank_image(jpeg / f"{i}.jpg", lab.shape)
    data = tmp_path / "data"
    argv = ["--context-root", str(root), "--data-root", str(data), "--split-file", str(split)]
    argv += ["--outputs", "459", "--images", str(jpeg), "--link-images", "copy"]
    assert ppc.main(argv) == 0
    out = capsys.readouterr().out
    assert "3 written" in out and "have no .mat file" in out
    base = data / "VOCdevkit" / "VOC2010"
    assert (base / "ImageSets/SegmentationContext/val.txt").read_text() == (
        "2008_000002\n2008_000000\n"
    )
    assert not (base / "SegmentationClassContext").exists()
    assert sorted(p.name for p in (base / "SegmentationClassContext459").iterdir()) == [
        "2008_000000.png",
        "2008_000002.png",
    ]
    copied = base / "JPEGImages" / "2008_000002.jpg"
    assert copied.is_file() and not copied.is_symlink()


def test_unmatched_class_is_reported_and_maps_to_background(tmp_path, context):
    root, maps = context
    _labels_txt(root / "labels.txt", rename={"aeroplane": "airplane"})
    data = tmp_path / "data"
    s = ppc.prepare_pascal_context(
        root / "trainval", root / "labels.txt", data, outputs=["60"], progress=False
    )
    assert any("not in" in w and "aeroplane" in w for w in s.warnings)
    assert any("differ from cls_context459.txt" in w for w in s.warnings)
    a60 = np.array(Image.open(data / "VOCdevkit/VOC2010/SegmentationClassContext/2008_000000.png"))
    assert a60.flat[2] == 0  # aeroplane no longer matched
    assert a60.flat[3] == 59  # wood still 59


def test_missing_inputs(tmp_path, capsys):
    argv = ["--context-root", str(tmp_path / "none"), "--data-root", str(tmp_path)]
    assert ppc.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "trainval.tar.gz" in err and str(tmp_path / "none") in err
    root = tmp_path / "pc"
    (root / "trainval").mkdir(parents=True)
    assert ppc.main(["--context-root", str(root), "--data-root", str(tmp_path)]) == 2
    assert "labels.txt" in capsys.readouterr().err
    _labels_txt(root / "labels.txt")
    argv = ["--context-root", str(root), "--data-root", str(tmp_path), "--split-file", "nope.txt"]
    assert ppc.main(argv) == 2
    assert "nope.txt" in capsys.readouterr().err
    (root / "trainval" / "bad.mat").write_bytes(b"not a mat file")
    assert ppc.main(["--context-root", str(root), "--data-root", str(tmp_path)]) == 1
    assert "1 failed" in capsys.readouterr().out


def test_outputs_load_through_the_catalog(tmp_path, context, write_blank_image):
    from ovdense.data import build_semseg_dataset

    root, maps = context
    jpeg = tmp_path / "JPEGImages"
    for i, lab in maps.items():
        write_blank_image(jpeg / f"{i}.jpg", lab.shape)
    data = tmp_path / "data"
    ppc.prepare_pascal_context(
        root / "trainval", root / "labels.txt", data, images=jpeg, link_images="symlink",
        progress=False,
    )  # fmt: skip
    lab = maps["2008_000001"]
    for name in ("context60", "context59", "context459"):
        ds = build_semseg_dataset(name, data)
        assert [ds[k]["id"] for k in range(len(ds))] == sorted(maps)
        got = ds[1]["label"]
        if name == "context459":
            exp = np.where(lab == 0, 65535, lab.astype(np.int64) - 1)
        elif name == "context60":
            exp = _expected_60(lab)
        else:  # reduce_zero_label: background -> ignore, 1..59 -> 0..58
            e60 = _expected_60(lab).astype(np.int64)
            exp = np.where(e60 == 0, 255, e60 - 1)
        np.testing.assert_array_equal(got, exp)
