"""Fixtures of the demo tests: the demo module, a tiny preset, a decompression-bomb PNG."""

import importlib
from pathlib import Path

import pytest
from fakes import write_bomb_png

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bomb_bytes(tmp_path_factory) -> bytes:
    """The bytes of a 30000x30000 PNG bomb (made once per session, ~1 s)."""
    return write_bomb_png(tmp_path_factory.mktemp("bomb") / "bomb.png").read_bytes()


@pytest.fixture()
def demo():
    """The demo's module, ``ovdense.cli.demo`` (``demo/demo.py`` is a wrapper around it)."""
    return importlib.import_module("ovdense.cli.demo")


@pytest.fixture()
def tiny_preset_file(tiny_preset):
    return tiny_preset("naclip")


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


@pytest.fixture()
def moving_video(tmp_path) -> Path:
    """An 8-frame 64x48 12-fps mp4 of moving shapes (see :func:`write_moving_shapes`)."""
    return write_moving_shapes(tmp_path / "clip.mp4")
