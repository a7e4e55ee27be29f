"""Tests for ovdense.utils.image: every input kind ends up as contiguous uint8 RGB [H, W, 3]."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fakes import write_bomb_png
from PIL import Image, ImageFile, ImageOps

from ovdense.utils import image as image_mod
from ovdense.utils.image import (
    IMAGE_EXTENSIONS,
    ImageTooLargeError,
    list_images,
    load_image,
    parse_max_image_pixels,
)


def _check_canonical(arr: np.ndarray, shape: tuple[int, int]) -> None:
    assert arr.dtype == np.uint8
    assert arr.shape == (*shape, 3)
    assert arr.flags["C_CONTIGUOUS"]


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------


def test_rgb_png_round_trip(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    out = load_image(tmp_path / "x.png")
    _check_canonical(out, (5, 7))
    np.testing.assert_array_equal(out, rgb)
    # str paths work too
    np.testing.assert_array_equal(load_image(str(tmp_path / "x.png")), rgb)


def test_grayscale_png_gives_three_equal_channels(tmp_path: Path) -> None:
    gray = np.array([[0, 10, 200], [255, 1, 128]], dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    _check_canonical(out, (2, 3))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = [[10, 20], [30, 40]]
    rgba[..., 1] = 50
    rgba[..., 2] = [[200, 0], [1, 255]]
    rgba[..., 3] = [[0, 255], [128, 7]]  # alpha must not affect the colours
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out, rgba[..., :3])


def test_16bit_gray_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100, 65535, 128, 129]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = load_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[..., 0], [[0, 100, 255, 0, 1]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_16bit_rgb_png_is_rounded(tmp_path: Path) -> None:
    # Pillow itself truncates 16-bit RGB to the high byte (1000 -> 3); we round (1000 -> 4).
    rgb16 = np.array([[[0, 1000, 65535], [257 * 100, 2000, 128]]], dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])
    out = load_image(tmp_path / "c16.png")
    np.testing.assert_array_equal(out, [[[0, 4, 255], [100, 8, 0]]])


def test_palette_png(tmp_path: Path) -> None:
    im = Image.frombytes("P", (3, 1), bytes([0, 1, 2]))
    im.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (256 * 3 - 9))
    im.save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out[0], [[255, 0, 0], [0, 255, 0], [10, 20, 30]])


def test_one_bit_png(tmp_path: Path) -> None:
    Image.fromarray(np.array([[True, False]])).save(tmp_path / "b.png")
    out = load_image(tmp_path / "b.png")
    np.testing.assert_array_equal(out[0, :, 0], [255, 0])


def test_exif_rotated_jpeg_is_rotated(tmp_path: Path) -> None:
    rgb = np.zeros((20, 40, 3), dtype=np.uint8)  # landscape as stored
    rgb[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "r.jpg")
    assert out.shape == (40, 20, 3)  # portrait once oriented
    # After a clockwise rotation the stored left half is on top.
    assert out[:15].mean() > 200 and out[25:].mean() < 50


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_helper_matches_pillow(orientation: int) -> None:
    arr = np.arange(3 * 5, dtype=np.uint8).reshape(3, 5)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(im))
    ours = image_mod._apply_orientation(arr[:, :, None], orientation)[:, :, 0]
    np.testing.assert_array_equal(ours, expected)


def test_corrupt_file_raises_value_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "broken_photo.jpg"
    bad.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ValueError, match="broken_photo.jpg") as info:
        load_image(bad)
    assert "not a readable image" in str(info.value)
    assert info.value.__cause__ is None  # no wall of Pillow traceback


def test_truncated_png_raises_value_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8) + 7).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png"):
        load_image(path)


def test_missing_path_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")


def test_folder_path_raises_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="folder"):
        load_image(tmp_path)


def test_too_large_image_is_refused_with_hint(tmp_path: Path, monkeypatch) -> None:
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(ImageTooLargeError, match="too large") as info:
        load_image(tmp_path / "big.png")
    msg = str(info.value)
    assert "ovdense.utils.image.MAX_IMAGE_PIXELS" in msg and "OVDENSE_MAX_IMAGE_PIXELS" in msg
    assert "4x4 = 16 pixels" in msg and "limit of 10 pixels" in msg and "big.png" in msg
    assert "\n" not in msg and msg.count(". ") == 0  # one sentence
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", None)
    assert load_image(tmp_path / "big.png").shape == (4, 4, 3)
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", 0)  # 0 = no limit, as in the variable
    assert load_image(tmp_path / "big.png").shape == (4, 4, 3)


def test_max_pixels_argument_overrides_the_module_limit(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4, 3), 9, dtype=np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ImageTooLargeError, match="limit of 15 pixels"):
        load_image(tmp_path / "big.png", max_pixels=15)
    assert load_image(tmp_path / "big.png", max_pixels=16)[0, 0, 0] == 9
    assert image_mod.MAX_IMAGE_PIXELS == image_mod.PILLOW_MAX_IMAGE_PIXELS  # untouched


@pytest.fixture(scope="session")
def bomb_png(tmp_path_factory) -> Path:
    return write_bomb_png(tmp_path_factory.mktemp("bomb") / "bomb.png")


def test_decompression_bomb_is_refused_from_its_header(bomb_png: Path, monkeypatch) -> None:
    assert bomb_png.stat().st_size < 1_000_000
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", image_mod.PILLOW_MAX_IMAGE_PIXELS)

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the pixels of a too-large image were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError) as info:
        load_image(bomb_png)
    assert time.perf_counter() - start < 2.0
    msg = str(info.value)
    assert str(bomb_png) in msg
    assert "30000x30000 = 900,000,000 pixels" in msg and "limit of 89,478,485 pixels" in msg


def test_default_limit_is_pillows(monkeypatch) -> None:
    assert image_mod.PILLOW_MAX_IMAGE_PIXELS == 89_478_485
    monkeypatch.delenv("OVDENSE_MAX_IMAGE_PIXELS", raising=False)
    assert image_mod._limit_from_environment() == 89_478_485


@pytest.mark.parametrize(
    "value, limit",
    [
        ("0", None),
        ("none", None),
        (" None ", None),
        ("2e8", 200_000_000),
        ("1_000", 1000),
        ("12,000", 12_000),
        ("", 89_478_485),
    ],
)
def test_limit_from_the_environment(monkeypatch, value, limit) -> None:
    monkeypatch.setenv("OVDENSE_MAX_IMAGE_PIXELS", value)
    assert image_mod._limit_from_environment() == limit


@pytest.mark.parametrize("value", ["-1", "abc", "1.5"])
def test_bad_environment_limit_warns_and_keeps_the_default(monkeypatch, value) -> None:
    monkeypatch.setenv("OVDENSE_MAX_IMAGE_PIXELS", value)
    with pytest.warns(UserWarning, match="OVDENSE_MAX_IMAGE_PIXELS"):
        assert image_mod._limit_from_environment() == 89_478_485
    with pytest.raises(ValueError, match=">= 0"):
        parse_max_image_pixels(value)


def test_environment_variable_sets_the_limit_at_import() -> None:
    code = "import ovdense.utils.image as m; print(m.MAX_IMAGE_PIXELS)"
    env = {**os.environ, "OVDENSE_MAX_IMAGE_PIXELS": "1234"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "1234"


def test_pillow_limit_is_restored(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    Image.fromarray(np.zeros((2, 2), dtype=np.uint8)).save(tmp_path / "s.png")
    load_image(tmp_path / "s.png")
    (tmp_path / "bad.png").write_bytes(b"junk")
    with pytest.raises(ValueError):
        load_image(tmp_path / "bad.png")
    assert Image.MAX_IMAGE_PIXELS == before


# ------------------------------------------------------------------------------------------
# PIL images, arrays and tensors
# ------------------------------------------------------------------------------------------


def test_pil_image_inputs() -> None:
    gray = Image.fromarray(np.array([[5, 6]], dtype=np.uint8))
    np.testing.assert_array_equal(load_image(gray)[0], [[5, 5, 5], [6, 6, 6]])
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    np.testing.assert_array_equal(load_image(f)[0, :, 0], [0, 128, 255])
    f_big = Image.fromarray(np.array([[-3.0, 100.4, 300.0]], dtype=np.float32), mode="F")
    np.testing.assert_array_equal(load_image(f_big)[0, :, 0], [0, 100, 255])
    with pytest.raises(ValueError, match="empty"):
        load_image(Image.new("RGB", (0, 5)))


def test_numpy_gray_and_single_channel() -> None:
    gray = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    out = load_image(gray)
    _check_canonical(out, (2, 2))
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(load_image(gray[..., None]), out)


def test_numpy_rgba_drops_alpha() -> None:
    rgba = np.random.default_rng(1).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(load_image(rgba), rgba[..., :3])


def test_numpy_float_in_unit_range_is_scaled() -> None:
    arr = np.array([[[0.0, 0.5, 1.0]]], dtype=np.float32)
    np.testing.assert_array_equal(load_image(arr), [[[0, 128, 255]]])


def test_numpy_float_above_one_is_clipped() -> None:
    arr = np.array([[[-5.0, 42.4, 300.0]]], dtype=np.float64)
    np.testing.assert_array_equal(load_image(arr), [[[0, 42, 255]]])


def test_numpy_uint16_is_scaled() -> None:
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(load_image(arr)[0, :, 1], [0, 100, 255])


def test_numpy_bool_and_int() -> None:
    np.testing.assert_array_equal(load_image(np.array([[True, False]]))[0, :, 0], [255, 0])
    ints = np.array([[-4, 7, 1000]], dtype=np.int32)
    np.testing.assert_array_equal(load_image(ints)[0, :, 2], [0, 7, 255])


def test_non_contiguous_input_gives_contiguous_output() -> None:
    arr = np.random.default_rng(2).integers(0, 256, (6, 8, 3), dtype=np.uint8)[::2, ::-1]
    out = load_image(arr)
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 4, 3), (4, 4, 2), (4, 4, 5), (5,), (0, 4, 3), (0, 0)],
)
def test_bad_shapes_raise(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        load_image(np.zeros(shape, dtype=np.uint8))


def test_bad_dtype_and_type_raise() -> None:
    with pytest.raises(ValueError, match="dtype"):
        load_image(np.zeros((2, 2, 3), dtype=np.complex64))
    with pytest.raises(TypeError):
        load_image(12)  # type: ignore[arg-type]


def test_torch_chw_and_hwc() -> None:
    hwc = torch.randint(0, 256, (4, 5, 3), dtype=torch.uint8)
    expected = hwc.numpy()
    np.testing.assert_array_equal(load_image(hwc), expected)
    np.testing.assert_array_equal(load_image(hwc.permute(2, 0, 1)), expected)
    as_float = hwc.permute(2, 0, 1).float() / 255.0
    np.testing.assert_array_equal(load_image(as_float), expected)
    np.testing.assert_array_equal(load_image(as_float.half()), expected)


@pytest.mark.parametrize(
    ("shape", "channels_first"),
    [
        ((3, 8, 9), True),
        ((8, 9, 3), False),
        ((4, 5, 3), False),
        ((3, 5, 4), True),
        ((3, 5, 3), True),
        ((1, 5, 6), True),
        ((5, 6, 1), False),
        ((4, 8, 9), True),
    ],
)
def test_torch_layout_detection(shape: tuple[int, int, int], channels_first: bool) -> None:
    t = torch.randint(0, 256, shape, dtype=torch.uint8)
    hwc = t.permute(1, 2, 0) if channels_first else t
    expected = load_image(hwc.numpy())
    np.testing.assert_array_equal(load_image(t), expected)


def test_torch_bad_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        load_image(torch.zeros(1, 3, 4, 4))


# ------------------------------------------------------------------------------------------
# list_images
# ------------------------------------------------------------------------------------------


def test_list_images(tmp_path: Path) -> None:
    for name in ["b.JPG", "a.png", "c.webp", "notes.txt", ".hidden.png", "d.TIFF"]:
        (tmp_path / name).write_bytes(b"")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "e.jpeg").write_bytes(b"")
    assert list_images(tmp_path) == [tmp_path / n for n in ["a.png", "b.JPG", "c.webp", "d.TIFF"]]
    assert list_images(tmp_path, recursive=True)[-1] == sub / "e.jpeg"
    assert len(list_images(tmp_path, recursive=True)) == 5
    assert ".bmp" in IMAGE_EXTENSIONS


def test_list_images_errors(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(ValueError, match=str(tmp_path.name)):
        list_images(tmp_path)
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        list_images(tmp_path / "readme.md")
