"""The code base stays lint- and format-clean: ``ruff check`` and ``ruff format --check`` are
part of the test run (so ``python -m pytest`` = CI fails on a lint or format error)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = shutil.which("ruff")
    if exe is None:
        pytest.fail("ruff is not installed: pip install -e '.[dev]' installs it.")
    return [exe]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(command):
    proc = subprocess.run(
        [*_ruff(), *command, "."], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"ruff {' '.join(command)} failed:\n{proc.stdout}{proc.stderr}"


def test_ruff_is_the_pinned_version():
    """Formatting differs between ruff releases: CI must use the version the code was
    formatted with (setup.py's dev extra)."""
    out = subprocess.run([*_ruff(), "--version"], capture_output=True, text=True).stdout
    setup = (ROOT / "setup.py").read_text()
    pinned = setup.split('"ruff==', 1)[1].split('"', 1)[0]
    assert out.split()[-1] == pinned, (out, pinned, sys.executable)
