#!/usr/bin/env python
"""``ovdense convert-fvit`` as a script; the code (and ``--help``) is in
``ovdense/cli/convert_fvit.py``."""

from ovdense.cli.convert_fvit import *  # noqa: F403 - importable from here as before

if __name__ == "__main__":
    from ovdense.cli import run_tool

    raise SystemExit(run_tool("ovdense.cli.convert_fvit"))
