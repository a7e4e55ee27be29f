"""Shared set-up of the tests of ``tools/``: the tools importable by name, tiny file writers.

``tools/`` is not a package; it is appended to ``sys.path`` here (before the test modules are
imported), so a test imports a converter as a module: ``import prepare_coco as pc``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools"
if str(TOOLS_DIR) not in sys.path:
    sys.path.append(str(TOOLS_DIR))


def _write_image(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture()
def write_image() -> Callable[[Path, np.ndarray], Path]:
    """``write_image(path, pixels)``: save an array as an image (format from the suffix).

    Parent folders are created; returns ``path``.
    """
    return _write_image


@pytest.fixture()
def write_blank_image() -> Callable[[Path, tuple[int, int]], Path]:
    """``write_blank_image(path, (h, w))``: save a black ``h x w`` RGB image; returns ``path``."""
    return lambda path, shape: _write_image(path, np.zeros((*shape, 3), np.uint8))
