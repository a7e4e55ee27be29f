"""Fixtures of the demo tests: the demo module, a tiny preset, a decompression-bomb PNG."""

import importlib
from pathlib import Path

import pytest
from fakes import write_bomb_png, write_moving_shapes

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


@pytest.fixture()
def moving_video(tmp_path) -> Path:
    """An 8-frame 64x48 12-fps mp4 of moving shapes (see :func:`write_moving_shapes`)."""
    return write_moving_shapes(tmp_path / "clip.mp4")
