"""Drawing segmentation results: palettes, colour maps, overlays with a legend, label PNGs.

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
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ovdense.utils.image import _open_image_file, load_image

__all__ = [
    "LegendEntry",
    "colorize",
    "legend_entries",
    "load_label_png",
    "make_palette",
    "overlay",
    "save_label_png",
]

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

    index: int
    """Class index (row of the palette)."""
    name: str
    """Class name."""
    area: int
    """Number of pixels of the class in the label map."""


# --------------------------------------------------------------------------------------------
# Palettes and colour maps
# --------------------------------------------------------------------------------------------


def _bit_interleaved_color(n: int) -> tuple[int, int, int]:
    """The PASCAL VOC colour of index ``n`` (bits of ``n`` spread over R, G, B, high bits first)."""
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= ((n >> 0) & 1) << shift
        g |= ((n >> 1) & 1) << shift
        b |= ((n >> 2) & 1) << shift
        n >>= 3
    return r, g, b


@functools.lru_cache(maxsize=8)
def _palette_cached(num_classes: int, seed: int) -> np.ndarray:
    # Classes 0..254 get the VOC colours of 1..255: 255 distinct colours, none of them black.
    colors = [_bit_interleaved_color(n) for n in range(1, min(num_classes, 255) + 1)]
    if num_classes > len(colors):
        seen = set(colors)
        seen.add((0, 0, 0))
        rng = np.random.default_rng(seed)
        while len(colors) < num_classes:
            # Fixed-size draws keep the palette of K classes a prefix of that of K' > K classes.
            for rgb in rng.integers(0, 256, size=(1024, 3)).tolist():
                color = (rgb[0], rgb[1], rgb[2])
                if max(color) < 48 or color in seen:  # keep clear of black ("no class")
                    continue
                seen.add(color)
                colors.append(color)
                if len(colors) == num_classes:
                    break
    palette = np.array(colors, dtype=np.uint8).reshape(num_classes, 3)
    palette.setflags(write=False)
    return palette


def make_palette(num_classes: int, seed: int = 0) -> np.ndarray:
    """A deterministic palette of distinct, non-black colours.

    The first 255 classes get the PASCAL VOC bit-interleaving colours of indices ``1..255``
    (shifted by one so that class 0 is not black); further classes get distinct random colours
    drawn from ``seed``. The palette for ``K`` classes is always a prefix of the palette for more
    classes, so colours stay stable when the vocabulary grows.

    Args:
        num_classes: Number of classes ``K`` (``>= 0``); thousands are fine.
        seed: Seed of the random colours used beyond the first 255 classes.

    Returns:
        A new ``uint8`` array of shape ``[K, 3]`` (RGB).

    Raises:
        TypeError: ``num_classes`` is not an int.
        ValueError: ``num_classes`` is negative.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}.")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}.")
    return _palette_cached(int(num_classes), int(seed)).copy()


def _as_palette(palette: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    arr = np.asarray(palette)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"A palette must have shape [K, 3], got {tuple(arr.shape)}.")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError("Palette values must be in [0, 255].")
    return arr.astype(np.uint8)


def _as_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        # Floats holding whole numbers (e.g. a label map that went through float math) are fine.
        is_whole = np.issubdtype(arr.dtype, np.floating) and bool(
            np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
        )
        if not is_whole:
            raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}.")
        arr = arr.astype(np.int64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape [H, W], got {tuple(arr.shape)}.")
    return arr


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
) -> np.ndarray:
    """Blend class colours onto an image and add a legend panel on the right.

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
        palette: Colours ``[>=K, 3]``; defaults to ``make_palette(K)``.
        legend: Add the legend panel. Without it (or when no class is present) the output has
            the image's shape.
        font_size: Legend font size in pixels; defaults to a size that scales with the image
            height (12-28 px).
        font_path: A TrueType/OpenType font for the legend. By default a system font with wide
            Unicode coverage is used when one is found, else Pillow's built-in font (basic
            Latin only: other characters show as boxes).
        max_columns: Most legend columns before the legend is truncated.

    Returns:
        A ``uint8`` RGB image of shape ``[max(H, legend height), W + legend width, 3]``.

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
    pal = make_palette(k) if palette is None else _as_palette(palette)
    if len(pal) < k:
        raise ValueError(f"The palette has {len(pal)} colours but there are {k} classes.")
    pal = pal[:k]

    entries = legend_entries(lab, class_names) if legend else []
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
        (tuple(int(c) for c in palette[e.index]), t) for e, t in zip(entries, texts)
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


# --------------------------------------------------------------------------------------------
# Label PNGs
# --------------------------------------------------------------------------------------------


def save_label_png(
    labels: np.ndarray,
    path: str | os.PathLike,
    palette: np.ndarray | None = None,
    bit_depth: Literal[8, 16] | None = None,
) -> None:
    """Save a label map as a PNG whose pixel values are the class indices.

    With 8 bits (all labels < 256) the PNG is a palette ("P") image: viewers show colours
    while the stored values stay class indices. With 16 bits (needed for labels >= 256) it is
    a 16-bit grayscale image, which has no palette. :func:`load_label_png` reads both back
    exactly. Parent folders are created; the file is always PNG whatever its extension.

    Args:
        labels: Integer class indices in ``[0, 65535]``, shape ``[H, W]``.
        path: Output file.
        palette: Colours ``[K, 3]`` for the 8-bit palette. Defaults to
            ``make_palette(255)`` with index 255 black (the usual ignore value), matching
            :func:`colorize` with that palette. Shorter palettes are padded with black.
        bit_depth: 8 or 16 to force a depth; by default 8 when ``labels.max() < 256``, else 16.

    Raises:
        ValueError: Labels are negative, above 65535, not integers, not 2-D, or do not fit the
            requested ``bit_depth``.
    """
    lab = _as_labels(labels)
    if lab.size == 0:
        raise ValueError(f"labels is empty (shape {tuple(lab.shape)}).")
    lo, hi = int(lab.min()), int(lab.max())
    if lo < 0:
        raise ValueError(
            f"Label PNGs cannot store negative labels (min is {lo}); map ignored pixels to a "
            "value such as 255 first."
        )
    if hi > 65535:
        raise ValueError(f"Label PNGs store values up to 65535, got {hi}.")
    if bit_depth is None:
        bit_depth = 8 if hi < 256 else 16
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}.")
    if bit_depth == 8 and hi >= 256:
        raise ValueError(f"An 8-bit label PNG stores labels up to 255, got {hi}.")

    height, width = lab.shape
    if bit_depth == 8:
        im = Image.frombytes("P", (width, height), lab.astype(np.uint8).tobytes())
        pal = np.zeros((256, 3), dtype=np.uint8)
        if palette is None:
            pal[:255] = make_palette(255)
        else:
            given = _as_palette(palette)[:256]
            pal[: len(given)] = given
        im.putpalette(pal.ravel().tolist())
    else:
        im = Image.frombytes("I;16", (width, height), lab.astype("<u2").tobytes())
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    im.save(out, format="PNG")


def load_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label map written by :func:`save_label_png` (or any single-channel label image).

    Palette images give their palette indices, not colours.

    Args:
        path: The label image.

    Returns:
        The class indices, shape ``[H, W]``: ``uint8`` for 8-bit files, ``uint16`` for 16-bit.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not a readable image, or is a colour image rather than a
            single-channel label map.
    """
    p = Path(path)
    with _open_image_file(p, kind="label image") as im:
        mode = im.mode
        if mode in ("P", "L", "1"):
            return np.array(im, dtype=np.uint8)
        if mode.startswith("I;16"):
            return np.array(im).astype(np.uint16)
        if mode == "I":
            arr = np.array(im)
            if arr.size and (arr.min() < 0 or arr.max() > 65535):
                return arr.astype(np.int32)
            return arr.astype(np.uint16)
    raise ValueError(
        f"'{p}' is a {mode} image, not a label map: label images hold one class index per pixel "
        "(palette 'P', 8-bit 'L' or 16-bit grayscale PNG). Colour-coded label maps must be "
        "converted to indices first."
    )
