#!/usr/bin/env python
"""``ovdense prepare coco`` as a script; the code (and ``--help``) is in
``ovdense/data/converters/coco.py``."""

from ovdense.data.converters.coco import *  # noqa: F403 - importable from here as before

if __name__ == "__main__":
    from ovdense.cli import run_tool

    raise SystemExit(run_tool("ovdense.data.converters.coco"))
