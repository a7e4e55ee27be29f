"""Small synthetic files shared by several test folders (importable: tests/ is on sys.path)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def write_bomb_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A valid 1-bit PNG of ``width x height`` black pixels: ~110 KB on disk, 900 M pixels
    (~3.6 GB as RGB) once decoded."""
    row = b"\0" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row * 1000) for _ in range(height // 1000)]
    parts += [comp.compress(row * (height % 1000)), comp.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )
    return path


def write_ade_layout(data_root: Path, num_images: int = 4) -> Path:
    """Random images + labels (values 0-5; 0 = "other", ignored) in the ADE20K-150 layout
    under ``data_root``; returns ``data_root``."""
    ade = data_root / "ADEChallengeData2016"
    (ade / "images" / "validation").mkdir(parents=True)
    (ade / "annotations" / "validation").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(num_images):
        h, w = 30 + 5 * i, 44
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        lab = rng.integers(0, 6, (h, w), dtype=np.uint8)
        Image.fromarray(img).save(ade / "images" / "validation" / f"ADE_val_{i:08d}.jpg")
        Image.fromarray(lab).save(ade / "annotations" / "validation" / f"ADE_val_{i:08d}.png")
    return data_root


def write_moving_shapes(path: Path, frames: int = 8, size=(64, 48), fps: float = 12.0) -> Path:
    """A short synthetic video: a red square and a blue disc moving on a grey-green gradient.

    ``.mp4`` is written with codec mp4v, anything else (``.avi``) with MJPG; both are read back
    by this OpenCV build.
    """
    import cv2
    import numpy as np

    w, h = size
    fourcc = cv2.VideoWriter.fourcc(*("mp4v" if path.suffix == ".mp4" else "MJPG"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    assert writer.isOpened(), f"this OpenCV cannot write {path.suffix}"
    yy, xx = np.mgrid[0:h, 0:w]
    for t in range(frames):
        frame = np.zeros((h, w, 3), np.uint8)
        frame[..., 1] = (xx * 255 // w).astype(np.uint8)
        frame[..., 0] = 90
        x0 = 4 + 4 * t
        frame[8:24, x0 : x0 + 16] = (0, 0, 255)  # BGR red square
        cx, cy = w - 12 - 3 * t, 32
        frame[(xx - cx) ** 2 + (yy - cy) ** 2 < 64] = (255, 0, 0)  # blue disc
        writer.write(frame)
    writer.release()
    return path
