#!/usr/bin/env python
"""``ovdense export-clip-dinoiser`` as a script; the code (and ``--help``) is in
``ovdense/cli/export_clip_dinoiser.py``."""

from ovdense.cli.export_clip_dinoiser import *  # noqa: F403 - importable from here as before

if __name__ == "__main__":
    from ovdense.cli import run_tool

    raise SystemExit(run_tool("ovdense.cli.export_clip_dinoiser"))
