"""ovdense.utils.labels: the one module that reads and writes label files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ovdense.utils import labels, visualizer
from ovdense.utils.labels import (
    load_label_png,
    read_label_image,
    save_label_image,
    save_label_png,
)


def test_old_names_are_the_same_functions():
    for name in ("save_label_png", "load_label_png", "make_palette"):
        assert getattr(visualizer, name) is getattr(labels, name)


@pytest.mark.parametrize("dtype, mode", [(np.uint8, "L"), (np.uint16, "I;16")])
@pytest.mark.parametrize("suffix, fmt", [(".png", "PNG"), (".tif", "TIFF")])
def test_save_label_image_keeps_values_and_depth(tmp_path, dtype, mode, suffix, fmt):
    values = np.array([[0, 1, 2], [7, 200, 255]], dtype=dtype)
    if dtype == np.uint16:
        values[1, 2] = 65535
    path = tmp_path / f"x{suffix}"
    save_label_image(values, path)
    with Image.open(path) as im:
        assert im.format == fmt and im.mode.startswith(mode)
    out = read_label_image(path)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, values)


def test_save_label_image_is_what_pillow_writes(tmp_path):
    """Byte for byte the file Image.fromarray(...).save writes (converters, generated sets)."""
    values = np.arange(12, dtype=np.uint8).reshape(3, 4)
    save_label_image(values, tmp_path / "a.png")
    Image.fromarray(values).save(tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_save_label_image_refuses_other_arrays(tmp_path):
    with pytest.raises(ValueError, match="uint8 or uint16"):
        save_label_image(np.zeros((2, 2), np.int64), tmp_path / "x.png")
    with pytest.raises(ValueError, match="uint8 or uint16"):
        save_label_image(np.zeros((2, 2, 3), np.uint8), tmp_path / "x.png")


def test_atomic_writes_leave_only_the_file(tmp_path):
    values = np.array([[1, 300]], dtype=np.uint16)
    save_label_image(values, tmp_path / "sub" / "x.tif", atomic=True)
    save_label_png(values, tmp_path / "sub" / "y.png", atomic=True)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.tif", "y.png"]
    with Image.open(tmp_path / "sub" / "x.tif") as im:
        assert im.format == "TIFF"
    np.testing.assert_array_equal(load_label_png(tmp_path / "sub" / "y.png"), values)


def test_read_label_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_label_image(tmp_path / "none.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError):
        read_label_image(tmp_path / "bad.png")
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="not a label map"):
        read_label_image(tmp_path / "rgb.png")
