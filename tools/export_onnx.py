#!/usr/bin/env python
"""``ovdense export-onnx`` as a script; the code (and ``--help``) is in
``ovdense/cli/export_onnx.py``."""

from ovdense.cli.export_onnx import *  # noqa: F403 - importable from here

if __name__ == "__main__":
    from ovdense.cli import run_tool

    raise SystemExit(run_tool("ovdense.cli.export_onnx"))
