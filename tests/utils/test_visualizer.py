"""Tests for ovdense.utils.visualizer: palettes, colorize, overlay + legend, label PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdense.utils.visualizer import (
    LegendEntry,
    colorize,
    legend_entries,
    load_label_png,
    make_palette,
    overlay,
    palette_for,
    save_label_png,
)

# ------------------------------------------------------------------------------------------
# make_palette / colorize
# ------------------------------------------------------------------------------------------


def test_palette_is_deterministic_distinct_and_never_black() -> None:
    pal = make_palette(3000)
    assert pal.shape == (3000, 3) and pal.dtype == np.uint8
    assert len({tuple(c) for c in pal.tolist()}) == 3000
    assert (pal.max(axis=1) > 0).all()
    np.testing.assert_array_equal(pal, make_palette(3000))
    # Growing the vocabulary keeps existing colours.
    np.testing.assert_array_equal(make_palette(300), pal[:300])
    np.testing.assert_array_equal(make_palette(10), pal[:10])


def test_palette_starts_with_voc_colours() -> None:
    # VOC colours of indices 1, 2, 3, 4 (index 0, black, is skipped).
    np.testing.assert_array_equal(
        make_palette(4), [[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    )


def test_palette_seed_changes_only_the_random_part() -> None:
    a, b = make_palette(400, seed=0), make_palette(400, seed=1)
    np.testing.assert_array_equal(a[:255], b[:255])
    assert not np.array_equal(a[255:], b[255:])


def test_palette_edge_cases() -> None:
    assert make_palette(0).shape == (0, 3)
    with pytest.raises(ValueError):
        make_palette(-1)
    pal = make_palette(5)
    pal[0] = 0  # the caller's copy, not the cached one
    assert make_palette(5)[0].tolist() == [128, 0, 0]


def test_colorize_maps_labels_to_palette_and_out_of_range_to_black() -> None:
    pal = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], dtype=np.uint8)
    labels = np.array([[0, 1, 2], [255, -1, 3]])
    out = colorize(labels, pal)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], pal)
    np.testing.assert_array_equal(out[1], np.zeros((3, 3)))


def test_colorize_uint8_labels_and_bad_inputs() -> None:
    pal = make_palette(256)
    labels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(colorize(labels, pal).reshape(-1, 3), pal)
    with pytest.raises(ValueError, match="integer"):
        colorize(np.array([[0.5]]), pal)
    with pytest.raises(ValueError, match=r"\[K, 3\]"):
        colorize(labels, np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        colorize(np.zeros((2, 2, 2), dtype=int), pal)


# ------------------------------------------------------------------------------------------
# overlay and legend
# ------------------------------------------------------------------------------------------


def _scene() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((60, 80, 3), 100, dtype=np.uint8)
    labels = np.zeros((60, 80), dtype=np.int64)  # class 0: the rest
    labels[:, 50:] = 2  # class 2: 60 * 30 = 1800 px
    labels[:5, :50] = 255  # ignore: 250 px
    labels[50:, :4] = 3  # class 3: 40 px
    return image, labels


NAMES = ["café", "unused", "狗", "Ελληνικά", "also unused"]


def test_legend_entries_lists_present_classes_by_area() -> None:
    _, labels = _scene()
    entries = legend_entries(labels, NAMES)
    assert entries == [
        LegendEntry(0, "café", 60 * 80 - 1800 - 250 - 40),
        LegendEntry(2, "狗", 1800),
        LegendEntry(3, "Ελληνικά", 40),
    ]
    assert legend_entries(np.full((2, 2), 255), NAMES) == []


def test_overlay_blends_colours_and_keeps_ignored_pixels() -> None:
    image, labels = _scene()
    pal = palette_for(NAMES)  # the default: colours by class name
    out = overlay(image, labels, NAMES, alpha=0.5, legend=False)
    assert out.shape == image.shape
    expected_2 = np.rint(0.5 * 100 + 0.5 * pal[2].astype(float))
    np.testing.assert_array_equal(out[30, 60], expected_2)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # ignore (255) untouched
    np.testing.assert_array_equal(overlay(image, labels, NAMES, alpha=0.0, legend=False), image)
    full = overlay(image, labels, NAMES, alpha=1.0, legend=False)
    np.testing.assert_array_equal(full[30, 60], pal[2])


def test_overlay_adds_legend_panel_to_the_right() -> None:
    image, labels = _scene()
    out = overlay(image, labels, NAMES, min_side=0)  # non-ASCII names must not crash
    assert out.dtype == np.uint8 and out.ndim == 3
    assert out.shape[1] > image.shape[1]
    assert out.shape[0] >= image.shape[0]
    # The image part is exactly the legend-free overlay: the legend covers nothing.
    np.testing.assert_array_equal(out[:60, :80], overlay(image, labels, NAMES, legend=False))
    panel = out[:, 80:]
    pal = palette_for(NAMES)
    colours = {tuple(c) for c in panel.reshape(-1, 3).tolist()}
    # Swatches of the present classes are drawn, those of absent classes are not.
    for present in (0, 2, 3):
        assert tuple(pal[present].tolist()) in colours
    for absent in (1, 4):
        assert tuple(pal[absent].tolist()) not in colours


def test_overlay_custom_palette_and_errors() -> None:
    image, labels = _scene()
    pal = np.array([[255, 0, 0]] * 5, dtype=np.uint8)
    out = overlay(image, labels, NAMES, alpha=1.0, palette=pal, legend=False)
    np.testing.assert_array_equal(out[30, 10], [255, 0, 0])
    with pytest.raises(ValueError, match="palette"):
        overlay(image, labels, NAMES, palette=pal[:2])
    with pytest.raises(ValueError, match="shape"):
        overlay(image, labels[:10], NAMES)
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, labels, NAMES, alpha=1.5)


def test_overlay_tiny_image_gets_a_taller_output() -> None:
    image = np.zeros((3, 3, 3), dtype=np.uint8)
    labels = np.array([[0, 1, 2], [0, 1, 2], [0, 0, 0]])
    out = overlay(image, labels, ["a", "b", "c"], min_side=0)  # not upscaled
    assert out.shape[0] > 3 and out.shape[1] > 3
    np.testing.assert_array_equal(
        out[:3, :3], overlay(image, labels, ["a", "b", "c"], legend=False)
    )
    assert (out[3:, :3] == 255).all()  # padding under the image is white


def test_overlay_many_classes_is_truncated_not_endless() -> None:
    names = [f"class {i}" for i in range(1000)]
    labels = (np.arange(100 * 100) % 1000).reshape(100, 100)
    out = overlay(np.zeros((100, 100, 3), dtype=np.uint8), labels, names, max_columns=3)
    few = overlay(np.zeros((100, 100, 3), dtype=np.uint8), labels % 3, names, max_columns=3)
    assert out.shape[1] < 100 + 3 * (few.shape[1] - 100) + 200
    assert out.shape[0] < 400


def test_overlay_with_accepts_float_image_and_font_size() -> None:
    image, labels = _scene()
    out = overlay(image.astype(np.float32) / 255.0, labels, NAMES, font_size=30)
    small = overlay(image, labels, NAMES, font_size=10)
    assert out.shape[1] > small.shape[1]


def test_overlay_bad_font_path() -> None:
    image, labels = _scene()
    with pytest.raises(ValueError, match="font"):
        overlay(image, labels, NAMES, font_path="/no/such/font.ttf")


# ------------------------------------------------------------------------------------------
# Label PNGs
# ------------------------------------------------------------------------------------------


def test_label_png_8bit_round_trip_is_a_palette_png(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).integers(0, 21, (17, 23))
    labels[0, :5] = 255
    path = tmp_path / "sub" / "l.png"  # parent folder is created
    save_label_png(labels, path)
    with Image.open(path) as im:
        assert im.mode == "P"
        colours = np.asarray(im.convert("RGB"))
    back = load_label_png(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)
    # Viewers see colorize(labels, make_palette(255)), ignore (255) black.
    np.testing.assert_array_equal(colours, colorize(labels, make_palette(255)))


def test_label_png_custom_palette(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2]])
    pal = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    save_label_png(labels, tmp_path / "c.png", palette=pal)
    with Image.open(tmp_path / "c.png") as im:
        np.testing.assert_array_equal(
            np.asarray(im.convert("RGB"))[0], [[1, 2, 3], [4, 5, 6], [0, 0, 0]]
        )
    np.testing.assert_array_equal(load_label_png(tmp_path / "c.png"), labels)


def test_label_png_300_classes_is_16bit(tmp_path: Path) -> None:
    labels = (np.arange(20 * 30) % 300).reshape(20, 30).astype(np.int64)
    labels[0, 0] = 65535
    path = tmp_path / "l16.png"
    save_label_png(labels, path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    back = load_label_png(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)


def test_label_png_forced_16bit_and_errors(tmp_path: Path) -> None:
    labels = np.array([[0, 7]], dtype=np.uint8)
    save_label_png(labels, tmp_path / "f.png", bit_depth=16)
    back = load_label_png(tmp_path / "f.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    with pytest.raises(ValueError, match="negative"):
        save_label_png(np.array([[-1, 0]]), tmp_path / "n.png")
    with pytest.raises(ValueError, match="65535"):
        save_label_png(np.array([[70000]]), tmp_path / "n.png")
    with pytest.raises(ValueError, match="255"):
        save_label_png(np.array([[300]]), tmp_path / "n.png", bit_depth=8)


def test_load_label_png_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_label_png(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"\x00junk")
    with pytest.raises(ValueError, match="junk.png"):
        load_label_png(tmp_path / "junk.png")
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="not a label map"):
        load_label_png(tmp_path / "rgb.png")
