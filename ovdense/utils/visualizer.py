"""Drawing segmentation results: colour maps, overlays with a legend.

Palettes (:func:`make_palette`, :func:`palette_for`, :func:`color_for_name`) and label PNGs
(:func:`save_label_png`, :func:`load_label_png`) live in :mod:`ovdense.utils.labels` and are
importable from here as before. :func:`overlay` colours classes by name with
:func:`palette_for`, the palette the demo and evaluation label PNGs share.

Conventions shared by every function here:

* a label map is an integer array of shape ``[H, W]`` holding class indices;
* values outside ``[0, K)`` (e.g. the ``255`` "ignore" value, or ``-1``) are not a class: they
  are drawn black by :func:`colorize` and left untouched by :func:`overlay`;
* a palette is a ``uint8`` array of shape ``[K, 3]`` (RGB), row ``i`` being the colour of
  class ``i``. :func:`make_palette` never returns black, so black always means "no class".
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .image import load_image
from .labels import (
    _as_labels,
    _as_palette,
    color_for_name,
    load_label_png,
    make_palette,
    palette_for,
    save_label_png,
)

__all__ = [
    "LegendEntry",
    "color_for_name",
    "colorize",
    "legend_entries",
    "load_label_png",
    "make_palette",
    "overlay",
    "palette_for",
    "save_label_png",
]

#: :func:`overlay` upscales images whose short side is below this (when it draws a legend).
UPSCALE_MIN_SIDE = 256
#: ... but never past this long side.
_UPSCALE_MAX_LONG_SIDE = 4096

# Colours of the legend panel.
_PANEL_BG = (255, 255, 255)
_TEXT_COLOR = (0, 0, 0)
_SWATCH_OUTLINE = (96, 96, 96)

# Fonts tried (in order) before Pillow's built-in one, which only covers basic Latin. A CJK font
# first, since it also covers Latin; all are absolute paths so no folder is ever searched.
_FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/Library/Fonts/Arial Unicode.ttf",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "C:/Windows/Fonts/msyh.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "C:/Windows/Fonts/arial.ttf",
)

_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


class LegendEntry(NamedTuple):
    """One line of an overlay legend."""

    # the field shadows tuple.index (mypy: incompatible with the base class); kept: public name
    index: int  # type: ignore[assignment]
    """Class index (row of the palette)."""
    name: str
    """Class name."""
    area: int
    """Number of pixels of the class in the label map."""


# --------------------------------------------------------------------------------------------
# Palettes and colour maps
# --------------------------------------------------------------------------------------------


def colorize(labels: np.ndarray, palette: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Paint a label map with a palette.

    Args:
        labels: Integer class indices, shape ``[H, W]``.
        palette: Colours, shape ``[K, 3]``; label ``i`` is drawn ``palette[i]``.

    Returns:
        A ``uint8`` RGB image of shape ``[H, W, 3]``. Labels outside ``[0, K)`` (e.g. the
        ``255`` ignore value) are black.

    Raises:
        ValueError: ``labels`` is not a 2-D integer array or ``palette`` is not ``[K, 3]``.
    """
    lab = _as_labels(labels)
    pal = _as_palette(palette)
    out = np.zeros((*lab.shape, 3), dtype=np.uint8)
    valid = (lab >= 0) & (lab < len(pal))
    out[valid] = pal[lab[valid]]
    return out


# --------------------------------------------------------------------------------------------
# Overlay with legend
# --------------------------------------------------------------------------------------------


#: Pixels handled at once by :func:`overlay` and the class counts: the temporaries of one block
#: (~40 bytes per pixel) stay a few MB whatever the image size.
_BLOCK_PIXELS = 1 << 16


def _row_blocks(height: int, width: int) -> range:
    return range(0, height, max(1, _BLOCK_PIXELS // max(1, width)))


def _class_counts(lab: np.ndarray, k: int) -> np.ndarray:
    """Pixels of each class ``0..k-1`` in a label map (other values ignored), block by block."""
    counts = np.zeros(k, dtype=np.int64)
    if k == 0 or lab.size == 0:
        return counts
    step = _row_blocks(*lab.shape).step
    for y in range(0, lab.shape[0], step):
        flat = lab[y : y + step].ravel()
        flat = flat[(flat >= 0) & (flat < k)]
        if flat.size:
            counts += np.bincount(flat.astype(np.intp, copy=False), minlength=k)
    return counts


def legend_entries(labels: np.ndarray, class_names: Sequence[str]) -> list[LegendEntry]:
    """The classes present in a label map, largest first (what :func:`overlay` lists).

    Args:
        labels: Integer class indices, shape ``[H, W]``. Values outside
            ``[0, len(class_names))`` are ignored.
        class_names: Name of each class.

    Returns:
        One :class:`LegendEntry` per present class, sorted by area (descending), ties by index.
    """
    lab = _as_labels(labels)
    k = len(class_names)
    counts = _class_counts(lab, k)
    present = np.flatnonzero(counts)
    if present.size == 0:
        return []
    order = sorted(present.tolist(), key=lambda i: (-int(counts[i]), i))
    return [LegendEntry(i, str(class_names[i]), int(counts[i])) for i in order]


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    alpha: float = 0.5,
    palette: np.ndarray | None = None,
    legend: bool = True,
    *,
    font_size: int | None = None,
    font_path: str | os.PathLike | None = None,
    max_columns: int = 4,
    min_side: int = UPSCALE_MIN_SIDE,
) -> np.ndarray:
    """Blend class colours onto an image and add a legend panel on the right.

    Small images are upscaled first so that the legend next to them is legible: when a legend
    is drawn and the short side is below ``min_side`` (256), image and labels are enlarged by
    the integer factor ``ceil(min_side / short side)`` (but so that the long side stays
    <= 4096): labels by pixel repetition (nearest), the image with Lanczos. Without a legend
    the output always has the image's size.

    The legend lists only the classes present in ``labels`` (largest area first) as a coloured
    swatch and the class name. It sits in its own panel to the right of the image, so it never
    hides content: the output is wider than the image, and taller when the legend needs more
    height than the image has (tiny images); the extra space is white. Long legends wrap into up
    to ``max_columns`` columns, then end with "+N more".

    Args:
        image: RGB image, shape ``[H, W, 3]`` ``uint8`` (anything :func:`load_image` accepts).
        labels: Integer class indices, shape ``[H, W]``. Values outside
            ``[0, len(class_names))`` (e.g. 255) are left as the original image.
        class_names: Name of each class; ``len(class_names)`` is the number of classes ``K``.
        alpha: Opacity of the class colours, in ``[0, 1]``.
        palette: Colours ``[>=K, 3]``; defaults to ``palette_for(class_names)`` (stable per
            class name, the colours of label PNGs saved with ``class_names``).
        legend: Add the legend panel. Without it (or when no class is present) the output has
            the image's shape.
        font_size: Legend font size in pixels; defaults to a size that scales with the image
            height (12-28 px).
        font_path: A TrueType/OpenType font for the legend. By default a system font with wide
            Unicode coverage is used when one is found, else Pillow's built-in font (basic
            Latin only: other characters show as boxes).
        max_columns: Most legend columns before the legend is truncated.
        min_side: Short side below which an image with a legend is upscaled; 0 never upscales.

    Returns:
        A ``uint8`` RGB image of shape ``[max(sH, legend height), sW + legend width, 3]``, ``s``
        being the upscaling factor (1 for images whose short side is >= ``min_side``).

    Raises:
        ValueError: Shapes do not match, ``alpha`` is outside ``[0, 1]``, or the palette has
            fewer than ``K`` colours.
    """
    img = load_image(image)
    lab = _as_labels(labels)
    if lab.shape != img.shape[:2]:
        raise ValueError(
            f"labels shape {tuple(lab.shape)} does not match image shape {img.shape[:2]} "
            "(resize the labels with nearest-neighbour interpolation first)."
        )
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    k = len(class_names)
    pal = palette_for(class_names) if palette is None else _as_palette(palette)
    if len(pal) < k:
        raise ValueError(f"The palette has {len(pal)} colours but there are {k} classes.")
    pal = pal[:k]

    entries = legend_entries(lab, class_names) if legend else []
    if entries:
        img, lab = _upscale_small(img, lab, int(min_side))
    size = font_size if font_size is not None else int(np.clip(round(img.shape[0] / 32), 12, 28))
    panel = (
        _render_legend(entries, pal, img.shape[0], int(size), font_path, max_columns)
        if entries
        else np.zeros((0, 0, 3), dtype=np.uint8)
    )
    height, width = img.shape[:2]
    # The colours are blended straight into the output, a block of rows at a time: no full-size
    # float copy of the image (the output is the only full-size array made here).
    out = np.empty((max(height, panel.shape[0]), width + panel.shape[1], 3), dtype=np.uint8)
    if panel.size:
        out[:] = _PANEL_BG
        out[: panel.shape[0], width:] = panel
    alpha = float(alpha)
    step = _row_blocks(height, width).step
    for y in range(0, height, step):
        lab_b, img_b = lab[y : y + step], img[y : y + step]
        dst = out[y : y + len(lab_b), :width]
        dst[...] = img_b
        valid = (lab_b >= 0) & (lab_b < k)
        if valid.any():
            colors = pal[lab_b[valid]].astype(np.float32)
            mixed = (1.0 - alpha) * img_b[valid].astype(np.float32) + alpha * colors
            dst[valid] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


def _upscale_small(
    img: np.ndarray, lab: np.ndarray, min_side: int
) -> tuple[np.ndarray, np.ndarray]:
    """Image and labels enlarged by an integer factor when the short side is below ``min_side``."""
    height, width = lab.shape
    short, long = min(height, width), max(height, width)
    if short == 0 or short >= min_side:
        return img, lab
    factor = min(math.ceil(min_side / short), max(1, _UPSCALE_MAX_LONG_SIDE // long))
    if factor <= 1:
        return img, lab
    big = Image.fromarray(img).resize((width * factor, height * factor), Image.Resampling.LANCZOS)
    return np.asarray(big), np.repeat(np.repeat(lab, factor, axis=0), factor, axis=1)


@functools.lru_cache(maxsize=16)
def _load_font(size: int, font_path: str | None) -> _Font:
    if font_path is not None:
        try:
            return ImageFont.truetype(font_path, size)
        except OSError as exc:
            raise ValueError(f"Cannot load the font '{font_path}': {exc}") from None
    for candidate in _FONT_CANDIDATES:
        if os.path.isfile(candidate):
            try:
                return ImageFont.truetype(candidate, size)
            except OSError:
                continue
    try:
        return ImageFont.load_default(size=size)  # scalable in Pillow >= 10.1 (with FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _drawable(text: str, font: _Font) -> str:
    """Pillow's bitmap fallback font only encodes Latin-1: replace anything else by '?'."""
    if isinstance(font, ImageFont.FreeTypeFont):
        return text
    return text.encode("latin-1", "replace").decode("latin-1")


def _text_width(text: str, font: _Font) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(math.ceil(right - min(left, 0)))


def _rgb(row: Sequence[int] | np.ndarray) -> tuple[int, int, int]:
    """A palette row (``[3]``) as an ``(r, g, b)`` tuple of ints."""
    r, g, b = (int(c) for c in row)
    return (r, g, b)


def _fit_text(text: str, font: _Font, max_width: int) -> str:
    """``text``, cut with '...' so that it is at most ``max_width`` pixels wide."""
    text = _drawable(text, font)
    if _text_width(text, font) <= max_width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if _text_width(text[:mid] + "...", font) <= max_width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "..."


def _render_legend(
    entries: list[LegendEntry],
    palette: np.ndarray,
    image_height: int,
    size: int,
    font_path: str | os.PathLike | None,
    max_columns: int,
) -> np.ndarray:
    font = _load_font(size, None if font_path is None else os.fspath(font_path))
    pad = max(4, size // 2)
    row_h = int(round(size * 1.5))
    swatch = size
    gap = max(4, size // 2)
    max_text = 16 * size

    # Fill the image height; a column holds at least min(n, 10) rows even on tiny images.
    n = len(entries)
    rows_fit = max(1, (image_height - 2 * pad) // row_h)
    rows = min(n, max(rows_fit, 10))
    columns = math.ceil(n / rows)
    texts = [_fit_text(e.name, font, max_text) for e in entries]
    shown: list[tuple[tuple[int, int, int] | None, str]] = [
        (_rgb(palette[e.index]), t) for e, t in zip(entries, texts)
    ]
    if columns > max(1, max_columns):
        columns = max(1, max_columns)
        keep = rows * columns - 1
        shown = shown[:keep] + [(None, f"+{n - keep} more")]

    col_items = [shown[c * rows : (c + 1) * rows] for c in range(columns)]
    col_widths = [
        swatch + gap + max(_text_width(t, font) for _, t in items) + pad for items in col_items
    ]
    width = pad + sum(col_widths)
    height = 2 * pad + rows * row_h
    panel = Image.new("RGB", (width, height), _PANEL_BG)
    draw = ImageDraw.Draw(panel)
    x = pad
    for items, col_w in zip(col_items, col_widths):
        for r, (color, text) in enumerate(items):
            y = pad + r * row_h
            mid = y + row_h // 2
            text_x = x
            if color is not None:
                top = mid - swatch // 2
                draw.rectangle(
                    (x, top, x + swatch - 1, top + swatch - 1), fill=color, outline=_SWATCH_OUTLINE
                )
                text_x = x + swatch + gap
            if isinstance(font, ImageFont.FreeTypeFont):
                draw.text((text_x, mid), text, font=font, fill=_TEXT_COLOR, anchor="lm")
            else:
                _, top_px, _, bottom_px = font.getbbox(text)
                draw.text(
                    (text_x, mid - (bottom_px + top_px) // 2), text, font=font, fill=_TEXT_COLOR
                )
        x += col_w
    return np.asarray(panel)
