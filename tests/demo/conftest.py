"""Fixtures of the demo tests: the demo module, a tiny preset, a decompression-bomb PNG."""

import importlib.util
import struct
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.fixture(scope="session")
def bomb_bytes(tmp_path_factory) -> bytes:
    """The bytes of a 30000x30000 PNG bomb (made once per session, ~1 s)."""
    return write_bomb_png(tmp_path_factory.mktemp("bomb") / "bomb.png").read_bytes()


@pytest.fixture()
def demo():
    """demo/demo.py as a module (fresh for each test)."""
    spec = importlib.util.spec_from_file_location("ovdense_demo", ROOT / "demo" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def tiny_preset_file(tiny_preset):
    return tiny_preset("naclip")
