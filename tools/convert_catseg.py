#!/usr/bin/env python
"""``ovdense convert-catseg`` as a script; the code (and ``--help``) is in
``ovdense/cli/convert_catseg.py``."""

from ovdense.cli.convert_catseg import *  # noqa: F403 - importable from here as well

if __name__ == "__main__":
    from ovdense.cli import run_tool

    raise SystemExit(run_tool("ovdense.cli.convert_catseg"))
