"""``tools/*.py`` and ``demo/demo.py`` are thin wrappers around the package's command modules:
their functions stay importable from the script, and running the script runs the module."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: script -> the module holding its code
WRAPPERS = {
    "demo/demo.py": "ovdense.cli.demo",
    "tools/eval_seg.py": "ovdense.cli.eval_seg",
    "tools/eval_all.py": "ovdense.cli.eval_all",
    "tools/eval_regions.py": "ovdense.cli.eval_regions",
    "tools/eval_det.py": "ovdense.cli.eval_det",
    "tools/eval_shapes.py": "ovdense.cli.eval_shapes",
    "tools/train.py": "ovdense.cli.train",
    "tools/train_tiny_clip.py": "ovdense.cli.train_tiny_clip",
    "tools/export_clipself.py": "ovdense.cli.export_clipself",
    "tools/export_clip_dinoiser.py": "ovdense.cli.export_clip_dinoiser",
    "tools/convert_clip_dinoiser.py": "ovdense.cli.convert_clip_dinoiser",
    "tools/convert_eva_clip.py": "ovdense.cli.convert_eva_clip",
    "tools/convert_fvit.py": "ovdense.cli.convert_fvit",
    "tools/convert_catseg.py": "ovdense.cli.convert_catseg",
    "tools/benchmark.py": "ovdense.cli.benchmark",
    "tools/export_onnx.py": "ovdense.cli.export_onnx",
    "tools/prepare_coco.py": "ovdense.data.converters.coco",
    "tools/prepare_pascal_context.py": "ovdense.data.converters.pascal_context",
    "tools/prepare_cityscapes.py": "ovdense.data.converters.cityscapes",
    "tools/prepare_ade20k_847.py": "ovdense.data.converters.ade20k_847",
    "tools/make_shapes_scene.py": "ovdense.data.synthetic",
}


def test_every_script_is_listed():
    scripts = {f"tools/{p.name}" for p in (ROOT / "tools").glob("*.py")} | {"demo/demo.py"}
    # check_min_deps.py runs the test suite of a checkout: a developer script, not a command;
    # the mmseg and detectron2 scripts need their optional frameworks (tests/integrations/
    # checks their wrappers); the parity_*.py scripts are developer scripts that run the official
    # code of a method beside ovdense (docs/parity*.md)
    optional = {"tools/mmseg_test.py", "tools/d2_train.py"}
    optional |= {f"tools/{p.name}" for p in (ROOT / "tools").glob("parity_*.py")}
    assert scripts - {"tools/check_min_deps.py"} - optional == set(WRAPPERS)


@pytest.mark.parametrize("script", list(WRAPPERS))
def test_wrapper_exposes_the_module(script):
    spec = importlib.util.spec_from_file_location(f"wrapper_{Path(script).stem}", ROOT / script)
    wrapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrapper)  # importing must not run the tool
    module = importlib.import_module(WRAPPERS[script])
    assert wrapper.main is module.main
    body = ast.parse((ROOT / script).read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    assert len(body) <= 3, f"{script} should stay a thin wrapper (imports and a __main__ block)"


def test_running_each_script_runs_its_module(tmp_path):
    """``python <script> --help`` for every wrapper, in one interpreter (each exits 0 and shows
    its own usage, named after the script as before the move)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import contextlib, io, runpy, sys\n"
        "for script in sys.argv[1:]:\n"
        "    sys.argv = [script, '--help']\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            runpy.run_path(script, run_name='__main__')\n"
        "            code = 'no exit'\n"
        "        except SystemExit as e:\n"
        "            code = e.code\n"
        "    print(script, code, out.getvalue().split(chr(10))[0])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(probe), *[str(ROOT / s) for s in WRAPPERS]],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(WRAPPERS)
    for script, line in zip(WRAPPERS, lines):
        path, code, usage = line.split(" ", 2)
        assert path == str(ROOT / script) and code in ("0", "None"), line
        assert usage.startswith(f"usage: {Path(script).name}"), line
