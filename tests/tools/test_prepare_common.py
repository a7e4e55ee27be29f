"""ovdense.data.prepare and ovdense.utils.io: the pieces the prepare_* converters share."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdense.data import prepare
from ovdense.utils.io import atomic_write, atomic_write_text, place_file


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_replaces_on_success_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp != target and not target.exists()
        tmp.write_text("one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "one" and _leftovers(target.parent) == []
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:  # a dangling symlink
        os.symlink(tmp_path / "nowhere", tmp)
        raise RuntimeError("writer failed")
    assert _leftovers(target.parent) == []
    atomic_write_text(target, "two")
    assert target.read_text() == "two"


def test_place_file_symlinks_or_copies(tmp_path):
    src = tmp_path / "a.jpg"
    src.write_bytes(b"jpeg")
    place_file(src, tmp_path / "out" / "link.jpg", "symlink")
    place_file(src, tmp_path / "out" / "copy.jpg", "copy")
    link, copy = tmp_path / "out" / "link.jpg", tmp_path / "out" / "copy.jpg"
    assert link.is_symlink() and os.readlink(link) == str(src.resolve())
    assert not copy.is_symlink() and copy.read_bytes() == b"jpeg"
    assert _leftovers(tmp_path / "out") == []


def test_summary_report_and_exit_code():
    s = prepare.Summary(written=3, skipped=1)
    assert s.exit_code == 0
    for k in range(22):
        s.warn(f"w{k}")
    s.fail("broken")
    assert (s.failed, s.exit_code) == (1, 1)
    lines = s.report("demo").splitlines()
    assert lines[0] == (
        "demo: 3 written, 1 skipped (already present; --overwrite to redo), 1 failed, 23 warning(s)"
    )
    assert lines[1:3] == ["  warning: w0", "  warning: w1"]
    assert len(lines) == 22 and lines[-1] == "  ... and 3 more warning(s)"


def test_missing_inputs_and_output_root(tmp_path, monkeypatch):
    with pytest.raises(
        prepare.InputError, match=r"missing X folder '.*none'; download and unzip Z"
    ):
        prepare.require(tmp_path / "none", "X", "Z")
    with pytest.raises(prepare.InputError, match="no files, get A.zip"):
        prepare.require_files(tmp_path.glob("*.png"), "no files, get A.zip")
    monkeypatch.delenv("OVDENSE_DATASETS", raising=False)
    with pytest.raises(prepare.InputError, match="OVDENSE_DATASETS"):
        prepare.resolve_output_root(None)
    monkeypatch.setenv("OVDENSE_DATASETS", str(tmp_path / "env"))
    assert prepare.resolve_output_root(None) == tmp_path / "env"  # need not exist
    assert prepare.resolve_output_root("~/x") == Path("~/x").expanduser()


def test_convert_files_skips_overwrites_and_counts_failures(tmp_path):
    inputs = {"a": 1, "b": 2, "bad": 0}
    out = tmp_path / "out"

    def convert(name: str) -> np.ndarray:
        if not inputs[name]:
            raise prepare.ConversionError(f"cannot read {name}")
        return np.full((2, 3), inputs[name], np.uint8)

    def run(overwrite: bool) -> tuple[prepare.Summary, list[str]]:
        job = prepare.Conversion(overwrite=overwrite, progress=False)
        done: list[str] = []
        job.convert_files(inputs, lambda n: out / f"{n}.png", convert, after=done.append)
        return job.summary, done

    s, done = run(overwrite=False)
    assert (s.written, s.skipped, s.failed, s.warnings) == (2, 0, 1, ["cannot read bad"])
    assert done == ["a", "b"]
    np.testing.assert_array_equal(np.array(Image.open(out / "b.png")), np.full((2, 3), 2))
    s, done = run(overwrite=False)
    assert (s.written, s.skipped, s.failed) == (0, 2, 1) and done == ["a", "b"]
    s, _ = run(overwrite=True)
    assert (s.written, s.skipped, s.failed) == (2, 0, 1)
    assert _leftovers(out) == []


def test_convert_each_writes_only_the_missing_outputs(tmp_path):
    job = prepare.Conversion(progress=False)
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "x_8.png")
    asked = []

    def convert(item: str, keys) -> dict[str, np.ndarray]:
        asked.append(list(keys))
        return {"8": np.ones((2, 2), np.uint8), "16": np.full((2, 2), 700, np.uint16)}

    outputs = {"8": tmp_path / "x_8.png", "16": tmp_path / "x_16.tif"}
    job.convert_each(["x"], lambda item: outputs, convert)
    assert asked == [["16"]] and (job.summary.written, job.summary.skipped) == (1, 1)
    im = Image.open(tmp_path / "x_16.tif")
    assert im.format == "TIFF" and np.array(im).astype(np.uint16).max() == 700


def test_place_images_keeps_existing_and_reports_missing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "1.jpg").write_bytes(b"1")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "2.jpg").write_bytes(b"kept")
    job = prepare.Conversion(progress=False)
    pairs = [(src / f"{i}.jpg", dst / f"{i}.jpg") for i in (1, 2, 3)]
    job.place_images(pairs, "copy", source=src)
    assert (dst / "1.jpg").read_bytes() == b"1" and (dst / "2.jpg").read_bytes() == b"kept"
    assert job.summary.warnings == [f"1 image(s) missing from {src}"]
