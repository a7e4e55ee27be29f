#!/usr/bin/env python
"""``ovdense prepare ade20k_847`` as a script; the code (and ``--help``) is in
``ovdense/data/converters/ade20k_847.py``."""

from ovdense.data.converters.ade20k_847 import *  # noqa: F403 - importable from here as before

if __name__ == "__main__":
    from ovdense.cli import run_tool

    raise SystemExit(run_tool("ovdense.data.converters.ade20k_847"))
