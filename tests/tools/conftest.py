"""Shared set-up of the tests of the command-line tools: tiny file writers.

The tools' code lives in the package (``ovdense/cli/*.py``, ``ovdense/data/converters/*.py``);
the tests import it from there (``from ovdense.data.converters import coco as pc``).
``tools/*.py`` are thin wrappers, checked by ``tests/test_cli_wrappers.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


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
