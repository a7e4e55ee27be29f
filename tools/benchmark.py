#!/usr/bin/env python
"""``ovdense benchmark`` as a script; the code (and ``--help``) is in
``ovdense/cli/benchmark.py``."""

from ovdense.cli.benchmark import *  # noqa: F403 - importable from here as before

if __name__ == "__main__":
    from ovdense.cli import run_tool

    raise SystemExit(run_tool("ovdense.cli.benchmark"))
