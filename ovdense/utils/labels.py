"""Label maps on disk and their colours: the one module that reads and writes label files.

A label map is an integer array ``[H, W]`` of class indices. Everything in ovdense that writes
or reads one goes through here:

* :func:`save_label_png` / :func:`load_label_png`: predictions (``ovdense demo``, benchmark
  runs). 8-bit labels are stored as a palette ("P") PNG whose colours come from
  :func:`make_palette`; labels >= 256 (ADE20K-847, Pascal Context 459) as 16-bit grayscale.
* :func:`save_label_image`: a plain single-channel file whose depth follows the array's dtype
  (``uint8`` -> 8-bit, ``uint16`` -> 16-bit), PNG or TIFF by suffix: what dataset converters
  and generated datasets write.
* :func:`read_label_image`: any label file of a dataset (palette, 8- or 16-bit PNG, TIFF; TIFF
  compressions Pillow cannot decode are read with OpenCV when it is installed).

Ground floor: imports nothing from ovdense but :mod:`ovdense.utils.image` and
:mod:`ovdense.utils.io`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from .image import _open_image_file
from .io import atomic_write

__all__ = [
    "load_label_png",
    "make_palette",
    "read_label_image",
    "save_label_image",
    "save_label_png",
]

# --------------------------------------------------------------------------------------------
# Palettes
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


# --------------------------------------------------------------------------------------------
# Label PNGs (predictions)
# --------------------------------------------------------------------------------------------


def save_label_png(
    labels: np.ndarray,
    path: str | os.PathLike,
    palette: np.ndarray | None = None,
    bit_depth: Literal[8, 16] | None = None,
    atomic: bool = False,
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
            :func:`~ovdense.utils.visualizer.colorize` with that palette. Shorter palettes are
            padded with black.
        bit_depth: 8 or 16 to force a depth; by default 8 when ``labels.max() < 256``, else 16.
        atomic: Write a temporary file next to ``path`` and rename it into place
            (:func:`ovdense.utils.io.atomic_write`), so that no reader sees half a file.

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
    if atomic:
        with atomic_write(out, suffix=".png") as tmp:
            im.save(tmp, format="PNG")
    else:
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


# --------------------------------------------------------------------------------------------
# Dataset label files
# --------------------------------------------------------------------------------------------

_TIFF_SUFFIXES = (".tif", ".tiff")


def save_label_image(labels: np.ndarray, path: str | os.PathLike, atomic: bool = False) -> None:
    """Write a plain single-channel label file, its depth given by the dtype.

    ``uint8`` labels give an 8-bit grayscale file, ``uint16`` labels a 16-bit one (no palette
    either way). ``.tif`` / ``.tiff`` files are written as TIFF, everything else as PNG.

    Args:
        labels: ``uint8`` or ``uint16`` class indices, shape ``[H, W]``.
        path: Output file (without ``atomic``, its folder must exist).
        atomic: Write a temporary file next to ``path`` and rename it into place
            (:func:`ovdense.utils.io.atomic_write`, which also creates the folder).

    Raises:
        ValueError: ``labels`` is not a 2-D ``uint8`` / ``uint16`` array.
    """
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"A label image is a 2-D uint8 or uint16 array, got {arr.dtype} of shape "
            f"{tuple(arr.shape)}."
        )
    fmt = "TIFF" if Path(path).suffix.lower() in _TIFF_SUFFIXES else "PNG"
    if atomic:
        with atomic_write(path) as tmp:
            Image.fromarray(arr).save(tmp, format=fmt)
    else:
        Image.fromarray(arr).save(path, format=fmt)


def read_label_image(path: str | os.PathLike) -> np.ndarray:
    """Read a dataset's label file as stored: palette indices, 8-bit or 16-bit gray, TIFF.

    Palette ("P") PNGs give their indices, not their colours. 16-bit files (Pascal Context 459,
    ADE20K-847) keep their values. A TIFF that Pillow cannot decode is read with OpenCV when
    it is installed.

    Args:
        path: The label file.

    Returns:
        The raw values, shape ``[H, W]`` (``uint8``, ``uint16`` or ``int32``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is unreadable or not a single-channel label map.
        OSError: The file cannot be read.
    """
    p = Path(path)
    try:
        return load_label_png(p)
    except (ValueError, OSError):
        if not p.is_file() or p.suffix.lower() not in _TIFF_SUFFIXES:
            raise
        arr = _read_with_cv2(p)
        if arr is None:
            raise
        return arr


def _read_with_cv2(path: Path) -> np.ndarray | None:
    try:
        import cv2

        arr = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except Exception:
        return None
    if arr is None or arr.ndim != 2 or arr.size == 0:
        return None
    return arr
