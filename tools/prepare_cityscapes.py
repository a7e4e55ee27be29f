#!/usr/bin/env python
"""``ovdense prepare cityscapes`` as a script; the code (and ``--help``) is in
``ovdense/data/converters/cityscapes.py``."""

from ovdense.data.converters.cityscapes import *  # noqa: F403 - importable from here as before

if __name__ == "__main__":
    from ovdense.cli import run_tool

    raise SystemExit(run_tool("ovdense.data.converters.cityscapes"))
