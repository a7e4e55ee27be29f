#!/usr/bin/env python
"""``ovdense eval-det`` as a script; the code (and ``--help``) is in
``ovdense/cli/eval_det.py``."""

from ovdense.cli.eval_det import *  # noqa: F403 - importable from here as before

if __name__ == "__main__":
    from ovdense.cli import run_tool

    raise SystemExit(run_tool("ovdense.cli.eval_det"))
