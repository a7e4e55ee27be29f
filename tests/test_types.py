"""The package type-checks: ``mypy`` (settings in pyproject.toml's ``[tool.mypy]``) is part of
the test run, so ``python -m pytest`` = CI fails on a type error (e.g. a wrong public
signature)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mypy() -> list[str]:
    exe = shutil.which("mypy")
    if exe is None:
        pytest.fail("mypy is not installed: pip install -e '.[dev]' installs it.")
    return [exe]


def test_mypy():
    proc = subprocess.run(_mypy(), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"mypy failed:\n{proc.stdout}{proc.stderr}"


def test_mypy_is_the_pinned_version():
    """Type checking differs between mypy releases: CI must use the version the code was
    checked with (setup.py's dev extra)."""
    out = subprocess.run([*_mypy(), "--version"], capture_output=True, text=True).stdout
    setup = (ROOT / "setup.py").read_text()
    pinned = setup.split('"mypy==', 1)[1].split('"', 1)[0]
    assert out.split()[1] == pinned, (out, pinned, sys.executable)
