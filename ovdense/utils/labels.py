"""Label maps on disk and their colours: the one module that reads and writes label files.

A label map is an integer array ``[H, W]`` of class indices. Everything in ovdense that writes
or reads one goes through here:

* :func:`save_label_png` / :func:`load_label_png`: predictions (``ovdense demo``, benchmark
  runs). 8-bit labels are stored as a palette ("P") PNG whose colours come from
  :func:`palette_for` when the class names are given, else from :func:`make_palette`; labels
  >= 256 (ADE20K-847, Pascal Context 459) as 16-bit grayscale.
* :func:`color_for_name` / :func:`palette_for`: the colours of named classes, shared by the
  demo, evaluation outputs and :func:`ovdense.utils.visualizer.overlay` (see
  :func:`palette_for` for the rules).
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
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from .image import _open_image_file
from .io import atomic_write

__all__ = [
    "BACKGROUND_COLOR",
    "color_for_name",
    "load_label_png",
    "make_palette",
    "palette_for",
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


# --------------------------------------------------------------------------------------------
# Palettes of named classes (stable per name, perceptually spaced)
# --------------------------------------------------------------------------------------------

#: Colour of the class named "background" (any case, surrounding spaces ignored): a fixed dark
#: grey, kept clear of every other class colour.
BACKGROUND_COLOR: tuple[int, int, int] = (64, 64, 64)

#: Number of colour slots a name can hash to.
_NUM_SLOTS = 256
#: Smallest OKLab distance :func:`palette_for` keeps between two classes of one vocabulary when
#: it can (halved, then dropped, only when no free slot is that far from all others).
_MIN_DISTANCE = 0.1


def _srgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """OKLab coordinates (Björn Ottosson, 2020) of sRGB colours ``[..., 3]`` in ``[0, 255]``."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m1 = np.array(
        [
            [0.4122214708, 0.5363325363, 0.0514459929],
            [0.2119034982, 0.6806995451, 0.1073969566],
            [0.0883024619, 0.2817188376, 0.6299787005],
        ]
    )
    m2 = np.array(
        [
            [0.2104542553, 0.7936177850, -0.0040720468],
            [1.9779984951, -2.4285922050, 0.4505937099],
            [0.0259040371, 0.7827717662, -0.8086757660],
        ]
    )
    return np.cbrt(lin @ m1.T) @ m2.T


@functools.lru_cache(maxsize=1)
def _slots() -> tuple[np.ndarray, np.ndarray]:
    """The colour slots (``uint8 [S, 3]``) and their OKLab coordinates (``[S, 3]``).

    Farthest-point sampling in OKLab over a 16-level sRGB grid, restricted to mid/light,
    saturated colours (OKLab L in [0.5, 0.92], chroma >= 0.06) so that every slot is far from
    black (ignored pixels), white (the legend panel) and :data:`BACKGROUND_COLOR`.
    """
    levels = np.arange(0, 256, 17)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    lab = _srgb_to_oklab(grid)
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    keep = (lab[:, 0] >= 0.5) & (lab[:, 0] <= 0.92) & (chroma >= 0.06)
    grid, lab = grid[keep], lab[keep]
    first = int(np.argmin(np.abs(grid - np.array([255, 0, 0])).sum(axis=1)))
    chosen = [first]
    dist = np.linalg.norm(lab - lab[first], axis=1)
    for _ in range(_NUM_SLOTS - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(lab - lab[nxt], axis=1))
    rgb = grid[chosen].astype(np.uint8)
    out_lab = lab[chosen]
    rgb.setflags(write=False)
    out_lab.setflags(write=False)
    return rgb, out_lab


def _name_key(name: str) -> str:
    return str(name).strip().casefold()


def _name_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def color_for_name(name: str) -> tuple[int, int, int]:
    """The colour of a class name on its own: the same in every run, process and vocabulary.

    The name (stripped, casefolded) is hashed (BLAKE2b, not Python's salted ``hash``) onto one
    of 256 perceptually spaced colour slots; "background" gets :data:`BACKGROUND_COLOR`. Inside
    a vocabulary :func:`palette_for` may move a name off this colour when an earlier name is
    too close to it.
    """
    key = _name_key(name)
    if key == "background":
        return BACKGROUND_COLOR
    rgb, _ = _slots()
    r, g, b = (int(v) for v in rgb[_name_hash(key) % len(rgb)])
    return (r, g, b)


def palette_for(names: Sequence[str]) -> np.ndarray:
    """Colours of a vocabulary, stable per class name: row ``i`` is the colour of ``names[i]``.

    Rules, applied in vocabulary order:

    * "background" (any case) is always :data:`BACKGROUND_COLOR` and takes no slot, so adding
      or removing it never recolours another class;
    * a repeated name gets the colour of its first occurrence;
    * every other name takes its :func:`color_for_name` slot, unless that slot is already used
      or lies closer than 0.1 (OKLab distance) to a colour of an *earlier* name: then it takes
      the next free slot (slot order, wrapping around) that is at least 0.1 from all of them
      (0.05, then any free slot, when none is). A name keeps its colour across vocabularies
      unless such a collision moves it, and only later names ever move;
    * past 256 names the extra names get colours derived from their hash (distinct, not
      perceptually spaced).

    Args:
        names: Class names.

    Returns:
        A new ``uint8`` array of shape ``[len(names), 3]`` (RGB), never black.
    """
    rgb, lab = _slots()
    n_slots = len(rgb)
    out = np.zeros((len(names), 3), dtype=np.uint8)
    taken = np.zeros(n_slots, dtype=bool)
    min_dist = np.full(n_slots, np.inf)
    first_row: dict[str, int] = {}
    used_rgb = {BACKGROUND_COLOR}
    for i, name in enumerate(names):
        key = _name_key(name)
        if key == "background":
            out[i] = BACKGROUND_COLOR
            continue
        if key in first_row:
            out[i] = out[first_row[key]]
            continue
        first_row[key] = i
        h = _name_hash(key)
        order = (h % n_slots + np.arange(n_slots)) % n_slots
        free = order[~taken[order]]
        if free.size:
            pick = int(free[0])
            for threshold in (_MIN_DISTANCE, _MIN_DISTANCE / 2):
                far = free[min_dist[free] >= threshold]
                if far.size:
                    pick = int(far[0])
                    break
            taken[pick] = True
            min_dist = np.minimum(min_dist, np.linalg.norm(lab - lab[pick], axis=1))
            color = (int(rgb[pick][0]), int(rgb[pick][1]), int(rgb[pick][2]))
        else:
            color = _overflow_color(h, used_rgb)
        used_rgb.add(color)
        out[i] = color
    return out


def _overflow_color(h: int, used: set[tuple[int, int, int]]) -> tuple[int, int, int]:
    """A colour from a name's hash, not in ``used`` and clear of black."""
    rng = np.random.default_rng(h)
    while True:
        r, g, b = (int(v) for v in rng.integers(0, 256, size=3))
        if max(r, g, b) >= 48 and (r, g, b) not in used:
            return (r, g, b)


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
    *,
    class_names: Sequence[str] | None = None,
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
        class_names: Names of the classes: the 8-bit palette is then ``palette_for(class_names)``
            (the colours :func:`~ovdense.utils.visualizer.overlay` draws), padded with black.
            Cannot be combined with ``palette``.

    Raises:
        ValueError: ``palette`` and ``class_names`` are both given; labels are negative, above
            65535, not integers, not 2-D, or do not fit the requested ``bit_depth``.
    """
    if palette is not None and class_names is not None:
        raise ValueError("Give save_label_png a palette or class_names, not both.")
    if class_names is not None:
        palette = palette_for(class_names)
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
