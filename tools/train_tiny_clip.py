#!/usr/bin/env python
"""``ovdense train-tiny-clip`` as a script; the code (and ``--help``) is in
``ovdense/cli/train_tiny_clip.py``."""

from ovdense.cli.train_tiny_clip import *  # noqa: F403 - importable from here as before

if __name__ == "__main__":
    from ovdense.cli import run_tool

    raise SystemExit(run_tool("ovdense.cli.train_tiny_clip"))
