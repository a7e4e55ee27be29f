"""Loading images into one canonical form: a contiguous ``uint8`` RGB array of shape ``[H, W, 3]``.

Every entry point of ovdense that takes an image goes through :func:`load_image`, so the rules
for odd inputs (16-bit PNGs, palettes, alpha, EXIF rotation, float arrays, CHW tensors) live in
one place:

* paths are decoded with Pillow, EXIF orientation is applied, and the result is converted with
  ``convert("RGB")`` semantics (alpha is dropped, grayscale and palettes are expanded);
* 16-bit data is scaled to 8 bits with ``round(value / 257)`` (so 65535 -> 255), never clipped;
* float data is taken to be in ``[0, 1]`` when its maximum is ``<= 1`` and scaled by 255,
  otherwise it is clipped to ``[0, 255]``;
* other integer data is clipped to ``[0, 255]``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = [
    "ENV_MAX_IMAGE_PIXELS",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "PILLOW_MAX_IMAGE_PIXELS",
    "ImageSource",
    "ImageTooLargeError",
    "list_images",
    "load_image",
    "parse_max_image_pixels",
]

#: Pillow's own decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS`` by default, a 1 GiB
#: RGBA image: 89,478,485 pixels, e.g. about 9500 x 9500). ovdense's default limit.
PILLOW_MAX_IMAGE_PIXELS: int = 1024 * 1024 * 1024 // 4 // 3

#: Environment variable that sets :data:`MAX_IMAGE_PIXELS` when ovdense is imported: a whole
#: number of pixels (``1e9`` and ``1_000_000_000`` are accepted), ``0`` or ``none`` for no limit.
ENV_MAX_IMAGE_PIXELS = "OVDENSE_MAX_IMAGE_PIXELS"


class ImageTooLargeError(ValueError):
    """An image file has more pixels than the limit (see :data:`MAX_IMAGE_PIXELS`)."""


def parse_max_image_pixels(text: str | int | None) -> int | None:
    """Read a pixel limit: a whole number ``>= 0`` (``0`` = no limit) or ``none``.

    Returns:
        The limit, or ``None`` for no limit.

    Raises:
        ValueError: ``text`` is not a whole number ``>= 0`` nor ``none``.
    """
    if text is None:
        return None
    if isinstance(text, bool):
        raise ValueError(f"A pixel limit must be a whole number >= 0 or 'none', got {text!r}.")
    raw = str(text).strip()
    if raw.lower() in ("none", "0"):
        return None
    try:
        value = int(raw.replace(",", ""))
    except ValueError:
        try:
            as_float = float(raw)
        except ValueError:
            as_float = float("nan")
        if not as_float.is_integer():
            raise ValueError(
                f"A pixel limit must be a whole number >= 0 (0 = no limit) or 'none', got {raw!r}."
            ) from None
        value = int(as_float)
    if value < 0:
        raise ValueError(
            f"A pixel limit must be a whole number >= 0 (0 = no limit) or 'none', got {raw!r}."
        )
    return value or None


def _limit_from_environment() -> int | None:
    raw = os.environ.get(ENV_MAX_IMAGE_PIXELS, "").strip()
    if not raw:
        return PILLOW_MAX_IMAGE_PIXELS
    try:
        return parse_max_image_pixels(raw)
    except ValueError as err:
        warnings.warn(
            f"Ignoring {ENV_MAX_IMAGE_PIXELS}={raw!r} ({err}); using the default limit of "
            f"{PILLOW_MAX_IMAGE_PIXELS:,} pixels.",
            stacklevel=2,
        )
        return PILLOW_MAX_IMAGE_PIXELS


#: Largest image (width * height) :func:`load_image` decodes from a file; larger files are
#: refused from their header, before any pixel is decoded (a few-MB "decompression bomb" PNG
#: can claim 30000 x 30000 pixels and take gigabytes once decoded). ``None`` (or ``0``) turns
#: the check off. The default is Pillow's own limit (:data:`PILLOW_MAX_IMAGE_PIXELS`,
#: ~89.5 M pixels), or the value of the environment variable ``OVDENSE_MAX_IMAGE_PIXELS`` when
#: it is set at import. Raise it for large aerial / satellite tiles
#: (``ovdense.utils.image.MAX_IMAGE_PIXELS = 400_000_000``), or pass ``max_pixels=`` to
#: :func:`load_image` for one call. Pillow's own check is switched off while ovdense decodes,
#: so this limit is the one that applies.
MAX_IMAGE_PIXELS: int | None = _limit_from_environment()

#: File extensions (lower case, with the dot) recognised by :func:`list_images`.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
)

ImageSource: TypeAlias = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor

_ACCEPTED_SHAPES = (
    "[H, W] (grayscale), [H, W, 1], [H, W, 3] (RGB) or [H, W, 4] (RGBA, alpha is dropped); "
    "torch tensors may also be channels-first [1|3|4, H, W]"
)

# Pillow's decompression-bomb limit is a module global; ovdense switches it off while it decodes
# (its own MAX_IMAGE_PIXELS check replaces it). A depth counter lets threads decode in parallel
# while making sure the last one out restores the user's value.
_PIL_LIMIT_LOCK = threading.Lock()
_pil_relax_depth = 0
_pil_saved_limit: int | None = None

# EXIF orientation tag.
_ORIENTATION_TAG = 0x0112


class _ModuleLimit:
    """Default of ``max_pixels``: the value of :data:`MAX_IMAGE_PIXELS` at call time."""

    def __repr__(self) -> str:
        return "MAX_IMAGE_PIXELS"


_MODULE_LIMIT: _ModuleLimit = _ModuleLimit()


def load_image(
    source: ImageSource, *, max_pixels: int | None | _ModuleLimit = _MODULE_LIMIT
) -> np.ndarray:
    """Load an image from a file, PIL image, numpy array or torch tensor.

    Args:
        source: One of

            * a path (``str`` / ``os.PathLike``) to an image file;
            * a ``PIL.Image.Image`` (any mode);
            * a ``np.ndarray`` of shape ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or
              ``[H, W, 4]`` with dtype uint8, uint16, bool, float or another integer type;
            * a ``torch.Tensor`` with the shapes above or channels-first ``[C, H, W]``
              (``C`` in 1, 3, 4). When both ends of a 3-D tensor could be channels, a size
              of 3 wins (``4x5x3`` is HWC, ``3x5x4`` is CHW), then channels-first (``1x5x4``).
        max_pixels: Largest width * height decoded from a file (``None`` or ``0``: no limit);
            by default :data:`MAX_IMAGE_PIXELS`. Arrays, tensors and PIL images are not checked
            (they are decoded already).

    Returns:
        A C-contiguous ``uint8`` array of shape ``[H, W, 3]`` in RGB order.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        ImageTooLargeError: The file's header gives more pixels than the limit (a
            ``ValueError``; nothing is decoded).
        ValueError: The file is not a readable image, the image is empty, or an array has an
            unsupported shape or dtype.
        TypeError: ``source`` is of an unsupported type.
    """
    if isinstance(source, (str, os.PathLike)):
        return _load_path(Path(source), max_pixels)
    if isinstance(source, Image.Image):
        return _from_pil(source)
    if isinstance(source, torch.Tensor):
        return _from_tensor(source)
    if isinstance(source, np.ndarray):
        return _from_array(source)
    raise TypeError(
        "load_image expects a path, PIL.Image.Image, numpy array or torch tensor, "
        f"got {type(source).__name__}."
    )


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """List the image files in a folder.

    Files are matched by extension (case-insensitive, see :data:`IMAGE_EXTENSIONS`). Hidden
    files and folders (names starting with ``.``, e.g. macOS ``._x.jpg`` resource forks) are
    skipped.

    Args:
        folder: The folder to search.
        recursive: Also search sub-folders.

    Returns:
        The image paths, sorted.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        NotADirectoryError: ``folder`` is not a directory.
        ValueError: ``folder`` contains no image files.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"Image folder not found: '{root}'.")
    if not root.is_dir():
        raise NotADirectoryError(f"'{root}' is not a folder (use load_image for single files).")
    candidates: Iterable[Path] = root.rglob("*") if recursive else root.iterdir()
    images = sorted(
        p
        for p in candidates
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.is_file()
    )
    if not images:
        exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        where = " (searched recursively)" if recursive else ""
        hint = "" if recursive else " Pass recursive=True to search sub-folders."
        raise ValueError(f"No images ({exts}) found in '{root}'{where}.{hint}")
    return images


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _resolve_limit(max_pixels: int | None | _ModuleLimit) -> int | None:
    limit = MAX_IMAGE_PIXELS if isinstance(max_pixels, _ModuleLimit) else max_pixels
    return parse_max_image_pixels(limit)


def _too_large_message(what: str, width: int, height: int, limit: int) -> str:
    return (
        f"{what} is too large: {width}x{height} = {width * height:,} pixels is more than the "
        f"limit of {limit:,} pixels (raise it with the environment variable "
        f"{ENV_MAX_IMAGE_PIXELS}=N, ovdense.utils.image.MAX_IMAGE_PIXELS = N or the demo's "
        "--max-image-pixels N; 0 means no limit)."
    )


def _check_size(what: str, width: int, height: int, limit: int | None) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"{what} is empty (size {width}x{height}).")
    if limit is not None and width * height > limit:
        raise ImageTooLargeError(_too_large_message(what, width, height, limit))


@contextlib.contextmanager
def _open_image_file(
    path: Path, kind: str = "image", max_pixels: int | None | _ModuleLimit = _MODULE_LIMIT
) -> Iterator[Image.Image]:
    """Open ``path`` with Pillow under ovdense's rules; decode errors become short ValueErrors.

    Raises ``FileNotFoundError`` for a missing path, :class:`ImageTooLargeError` for an image
    whose header gives more than ``max_pixels`` pixels (default :data:`MAX_IMAGE_PIXELS`;
    checked before anything is decoded), and ``ValueError`` for a folder, an empty image, or a
    file Pillow cannot decode (including errors raised while the caller loads the pixels inside
    the ``with`` block).
    """
    limit = _resolve_limit(max_pixels)
    if not path.exists():
        raise FileNotFoundError(f"{kind.capitalize()} file not found: '{path}'.")
    if path.is_dir():
        raise ValueError(f"'{path}' is a folder, not an {kind} file.")
    what = f"{kind.capitalize()} '{path}'"
    with _pillow_limit_relaxed():
        try:
            with Image.open(path) as im:
                width, height = im.size
                _check_size(what, width, height, limit)
                yield im
        except PermissionError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            if isinstance(exc, ValueError) and str(exc).startswith(what):
                raise  # one of ours, already clear
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(
                f"'{path}' is not a readable {kind} (Pillow could not decode it: {reason})."
            ) from None


@contextlib.contextmanager
def _pillow_limit_relaxed() -> Iterator[None]:
    """Switch Pillow's decompression-bomb check off (ovdense checks MAX_IMAGE_PIXELS itself)."""
    global _pil_relax_depth, _pil_saved_limit
    with _PIL_LIMIT_LOCK:
        if _pil_relax_depth == 0:
            _pil_saved_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _pil_relax_depth += 1
    try:
        yield
    finally:
        with _PIL_LIMIT_LOCK:
            _pil_relax_depth -= 1
            if _pil_relax_depth == 0:
                Image.MAX_IMAGE_PIXELS = _pil_saved_limit


def _load_path(path: Path, max_pixels: int | None | _ModuleLimit = _MODULE_LIMIT) -> np.ndarray:
    what = f"Image '{path}'"
    if path.is_dir():
        raise ValueError(
            f"'{path}' is a folder, not an image file (use list_images to list its images)."
        )
    with _open_image_file(path, max_pixels=max_pixels) as im:
        # Check the tiles before reading EXIF: for PNGs getexif() loads the pixels, which
        # clears ``im.tile``.
        is_16bit_color = _is_16bit_color(im)
        orientation = _exif_orientation(im)
        if is_16bit_color:
            arr = _decode_16bit_color(path)
            if arr is not None:
                return _apply_orientation(_from_array(arr, what), orientation)
        im.load()
        return _from_pil(ImageOps.exif_transpose(im), what)


def _exif_orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # broken EXIF must not make the image unreadable
        return 1


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an ``[H, W, C]`` array, like ``exif_transpose``."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.transpose(1, 0, 2)
    elif orientation == 6:
        arr = np.rot90(arr, k=-1)
    elif orientation == 7:
        arr = arr[::-1, ::-1].transpose(1, 0, 2)
    elif orientation == 8:
        arr = np.rot90(arr, k=1)
    return np.ascontiguousarray(arr)


def _is_16bit_color(im: Image.Image) -> bool:
    """Pillow reads 16-bit RGB(A) PNG / TIFF by truncating to the high byte; detect those."""
    if im.mode not in ("RGB", "RGBA", "LA"):
        return False
    for tile in getattr(im, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else (args[0] if args else None)
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def _decode_16bit_color(path: Path) -> np.ndarray | None:
    """Decode a 16-bit colour image with OpenCV; ``None`` when that fails (use Pillow's)."""
    try:
        import cv2

        data = np.fromfile(str(path), dtype=np.uint8)
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except Exception:
        return None
    if arr is None or arr.dtype != np.uint16 or arr.size == 0:
        return None
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[..., ::-1]  # BGR -> RGB
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., [2, 1, 0, 3]]  # BGRA -> RGBA
    elif arr.ndim == 3 and arr.shape[2] == 2:
        arr = arr[..., :1]  # gray + alpha
    return arr


# --------------------------------------------------------------------------------------------
# PIL images
# --------------------------------------------------------------------------------------------


def _from_pil(im: Image.Image, what: str = "Image") -> np.ndarray:
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ValueError(f"{what} is empty (size {width}x{height}).")
    mode = im.mode
    if mode in ("RGB",):
        arr = np.asarray(im)
    elif mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale (Pillow opens 16-bit PNGs as "I;16" or, in older versions, "I").
        arr = _u16_to_u8(np.asarray(im).astype(np.int64))
    elif mode == "F":
        arr = _float_to_u8(np.asarray(im, dtype=np.float64))
    else:
        # L, LA, 1, P, PA, RGBA, RGBX, CMYK, YCbCr, LAB, HSV, ...: Pillow's convert("RGB").
        arr = np.asarray(im.convert("RGB"))
    return _finish(arr)


# --------------------------------------------------------------------------------------------
# Arrays and tensors
# --------------------------------------------------------------------------------------------


def _from_tensor(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.ndim == 3 and _is_channels_first(tuple(t.shape)):
        t = t.permute(1, 2, 0)
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    if t.is_complex():
        raise ValueError(f"Cannot load an image from a complex tensor (dtype {t.dtype}).")
    return _from_array(t.numpy(), "Tensor image")


def _is_channels_first(shape: tuple[int, ...]) -> bool:
    """Whether a 3-D tensor shape is ``[C, H, W]`` rather than ``[H, W, C]``."""
    first, last = shape[0] in (1, 3, 4), shape[-1] in (1, 3, 4)
    if first != last:
        return first
    if first:  # both ends could be channels, e.g. 3x5x3 or 4x5x3: prefer 3 channels, then CHW
        return shape[0] == 3 or shape[-1] != 3
    return False  # neither: let _from_array report the shape


def _from_array(arr: np.ndarray, what: str = "Array image") -> np.ndarray:
    if arr.size == 0:
        raise ValueError(
            f"{what} is empty (shape {tuple(arr.shape)}). Accepted: {_ACCEPTED_SHAPES}."
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"{what} has unsupported shape {tuple(arr.shape)}. Accepted: {_ACCEPTED_SHAPES}."
        )
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    dtype = arr.dtype
    if dtype == np.uint8:
        pass
    elif dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif dtype == np.uint16:
        arr = _u16_to_u8(arr)
    elif np.issubdtype(dtype, np.floating):
        arr = _float_to_u8(arr.astype(np.float64, copy=False))
    elif np.issubdtype(dtype, np.integer):
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        raise ValueError(
            f"{what} has unsupported dtype {dtype}; use uint8, uint16, bool, float or int."
        )
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return _finish(arr)


def _u16_to_u8(arr: np.ndarray) -> np.ndarray:
    """Scale 16-bit values to 8 bits: ``round(v / 257)``; 0 -> 0, 65535 -> 255."""
    arr = np.clip(arr.astype(np.int64), 0, 65535)
    return ((arr + 128) // 257).astype(np.uint8)


def _float_to_u8(arr: np.ndarray) -> np.ndarray:
    """Floats in ``[0, 1]`` (max <= 1) are scaled by 255; others are clipped to ``[0, 255]``."""
    arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
    if arr.size and arr.max() <= 1.0:
        arr = arr * 255.0
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _finish(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr, dtype=np.uint8)
