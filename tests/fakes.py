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
