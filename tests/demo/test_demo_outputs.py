"""demo/demo.py: unique output names, output folder vs input folder, atomic writes, images that
cannot be processed (unreadable, too large, failing to segment) in a folder run."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from ovdense.utils import image as image_mod
from ovdense.utils.cli import run_cli
from ovdense.utils.visualizer import load_label_png


def _save(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def _args(preset, src, out, *extra):
    return ["--config", str(preset), "--input", str(src), "--classes", "cat,dog", "--output",
            str(out), "--device", "cpu", *extra]  # fmt: skip


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------
# Output names
# ------------------------------------------------------------------------------------------


def test_same_stem_different_extensions_keep_both_results(tmp_path, demo, tiny_preset_file, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _save(src / "a.png", 30, 50, 0)
    _save(src / "a.jpg", 41, 23, 1)
    _save(src / "b.png", 33, 34, 2)
    out = tmp_path / "out"
    assert run_cli(demo.main, _args(tiny_preset_file, src, out)) == 0
    assert "Wrote 3 result(s)" in capsys.readouterr().out
    assert _outputs(out) == sorted(
        f"{stem}{suffix}"
        for stem in ("a_jpg", "a_png", "b")
        for suffix in ("_labels.png", "_overlay.jpg", ".json")
    )
    # each result belongs to its own image
    assert load_label_png(out / "a_png_labels.png").shape == (30, 50)
    assert load_label_png(out / "a_jpg_labels.png").shape == (41, 23)
    assert json.loads((out / "a_png.json").read_text())["image"] == str(src / "a.png")
    assert json.loads((out / "a_jpg.json").read_text())["image"] == str(src / "a.jpg")
    assert json.loads((out / "b.json").read_text())["image"] == str(src / "b.png")


def test_output_stems_are_unique_ignoring_case(demo):
    root = Path("/data")
    images = [root / n for n in ["a.png", "a.jpg", "a_png.bmp", "B.PNG", "b.png", "c.png"]]
    images += [root / "x" / "y.png", root / "x_y.jpg"]
    assert demo.output_stems(images, root) == [
        "a_png", "a_jpg", "a_png_2", "B_PNG", "b_png_2", "c", "x_y_png", "x_y_jpg"
    ]  # fmt: skip
    assert demo.output_stems([root / "q" / "photo.JPG"], None) == ["photo"]


# ------------------------------------------------------------------------------------------
# Output folder vs input folder
# ------------------------------------------------------------------------------------------


def test_output_equal_to_input_is_refused(tmp_path, demo, tiny_preset_file, capsys, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    _save(src / "a.png", 30, 50, 0)
    monkeypatch.setattr(demo, "build_segmentor", _no_model)
    for out in (src, tmp_path / "x" / ".." / "in", tmp_path / "link"):
        if out.name == "link":
            out.symlink_to(src)
        rc = run_cli(demo.main, _args(tiny_preset_file, src, out))
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error:") and err.count("\n") == 1
        assert "is the input folder" in err
    assert _outputs(src) == ["a.png"]  # nothing written


def test_output_inside_input_recursive_is_refused(tmp_path, demo, tiny_preset_file, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _save(src / "a.png", 30, 50, 0)
    rc = run_cli(demo.main, _args(tiny_preset_file, src, src / "out", "--recursive"))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1
    assert "inside the input folder" in err and "--recursive" in err
    assert _outputs(src) == ["a.png"]


def test_output_inside_input_without_recursion_runs_twice_alike(
    tmp_path, demo, tiny_preset_file, capsys
):
    src = tmp_path / "in"
    src.mkdir()
    _save(src / "a.png", 30, 50, 0)
    _save(src / "b.jpg", 20, 40, 1)
    out = src / "out"
    first = []
    for _ in range(2):  # the second run does not read the first run's results
        assert run_cli(demo.main, _args(tiny_preset_file, src, out)) == 0
        assert "Wrote 2 result(s)" in capsys.readouterr().out
        first.append(_outputs(out))
    assert first[0] == first[1] == [
        "a.json", "a_labels.png", "a_overlay.jpg", "b.json", "b_labels.png", "b_overlay.jpg"
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------
# Atomic writes
# ------------------------------------------------------------------------------------------


def test_every_output_is_written_atomically(tmp_path, demo, tiny_preset_file, monkeypatch):
    src = tmp_path / "a.png"
    _save(src, 30, 50, 0)
    out = tmp_path / "out"
    seen = []
    real = demo.atomic_write

    def spy(path, **kwargs):
        seen.append((Path(path).name, kwargs.get("suffix", ".tmp")))
        return real(path, **kwargs)

    monkeypatch.setattr(demo, "atomic_write", spy)
    monkeypatch.setattr("ovdense.utils.io.atomic_write", spy)  # atomic_write_text's
    assert run_cli(demo.main, _args(tiny_preset_file, src, out)) == 0
    assert sorted(seen) == [("a.json", ".tmp"), ("a_labels.png", ".png"), ("a_overlay.jpg", ".jpg")]
    assert _outputs(out) == ["a.json", "a_labels.png", "a_overlay.jpg"]  # no temporaries left
    with Image.open(out / "a_overlay.jpg") as im:
        assert im.format == "JPEG"
    with Image.open(out / "a_labels.png") as im:
        assert im.format == "PNG" and im.mode == "P"


# ------------------------------------------------------------------------------------------
# Images that cannot be processed
# ------------------------------------------------------------------------------------------


@pytest.fixture()
def no_bomb_decoding(monkeypatch):
    """Fail (instead of eating gigabytes) if anything decodes an image of > 100 M pixels."""
    real = ImageFile.ImageFile.load

    def guarded(self, *args, **kwargs):
        if self.size[0] * self.size[1] > 100_000_000:
            raise AssertionError(f"a {self.size} image was decoded")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ImageFile.ImageFile, "load", guarded)


def test_folder_run_skips_bad_images_and_counts_them(
    tmp_path, demo, tiny_preset_file, bomb_bytes, capsys, no_bomb_decoding
):
    src = tmp_path / "in"
    src.mkdir()
    _save(src / "a.png", 30, 50, 0)
    (src / "bomb.png").write_bytes(bomb_bytes)
    (src / "broken.jpg").write_bytes(b"not an image")
    _save(src / "tiny.png", 4, 4, 3)  # smaller than one patch: fails in the segmentor
    _save(src / "z.jpg", 24, 30, 4)
    out = tmp_path / "out"
    start = time.perf_counter()
    rc = run_cli(demo.main, _args(tiny_preset_file, src, out, "model.short_side=None"))
    assert time.perf_counter() - start < 60
    text = capsys.readouterr()
    assert rc == 0
    summary = text.out.strip().splitlines()[-1]
    assert summary == (
        f"Wrote 2 result(s) to {out}; skipped 3: 1 too large (bomb.png), "
        "1 unreadable (broken.jpg), 1 failed to segment (tiny.png)"
    )
    assert "30000x30000 = 900,000,000 pixels" in text.out
    assert "limit of 89,478,485 pixels" in text.out
    assert _outputs(out) == [
        "a.json", "a_labels.png", "a_overlay.jpg", "z.json", "z_labels.png", "z_overlay.jpg"
    ]  # fmt: skip


def test_folder_run_with_no_success_exits_1(tmp_path, demo, tiny_preset_file, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "broken.png").write_bytes(b"junk")
    rc = run_cli(demo.main, _args(tiny_preset_file, src, tmp_path / "out"))
    assert rc == 1
    assert "Wrote 0 result(s)" in capsys.readouterr().out


def test_max_image_pixels_option(tmp_path, demo, tiny_preset_file, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _save(src / "a.png", 30, 50, 0)  # 1500 pixels
    _save(src / "b.png", 20, 40, 1)  # 800 pixels
    out = tmp_path / "out"
    before = image_mod.MAX_IMAGE_PIXELS
    assert run_cli(demo.main, _args(tiny_preset_file, src, out, "--max-image-pixels", "1000")) == 0
    text = capsys.readouterr().out
    assert "skipped 1: 1 too large (a.png)" in text and "limit of 1,000 pixels" in text
    assert _outputs(out) == ["b.json", "b_labels.png", "b_overlay.jpg"]
    assert image_mod.MAX_IMAGE_PIXELS == before  # the option does not change the global


def test_max_image_pixels_zero_lifts_the_limit(tmp_path, demo, tiny_preset_file, monkeypatch):
    src = tmp_path / "a.png"
    _save(src, 30, 50, 0)
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", 100)
    out = tmp_path / "out"
    assert run_cli(demo.main, _args(tiny_preset_file, src, out, "--max-image-pixels", "0")) == 0
    with Image.open(out / "a_labels.png") as im:
        assert im.size == (50, 30)


def test_single_too_large_image_is_one_line_error(
    tmp_path, demo, tiny_preset_file, bomb_bytes, capsys, no_bomb_decoding
):
    (tmp_path / "bomb.png").write_bytes(bomb_bytes)
    rc = run_cli(demo.main, _args(tiny_preset_file, tmp_path / "bomb.png", tmp_path / "out"))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1
    assert "bomb.png" in err and "30000x30000" in err and "--max-image-pixels" in err
    assert not (tmp_path / "out").exists() or _outputs(tmp_path / "out") == []


def _no_model(*args, **kwargs):
    raise AssertionError("the model was built")


def test_read_only_output_folder_is_one_line(tmp_path, demo, tiny_preset_file, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    src = tmp_path / "a.png"
    _save(src, 30, 50, 0)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        rc = run_cli(demo.main, _args(tiny_preset_file, src, locked / "out"))
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    assert rc == 2 and err == f"error: permission denied: {locked}\n"
