"""The ``ovdense`` command (console script of ``setup.py``, ``python -m ovdense``): sub-commands
run the same ``main(argv)`` as ``tools/*.py`` and ``demo/demo.py``, through the one error path."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ovdense
from ovdense.cli import COMMANDS, main, run_tool
from ovdense.data.converters import CONVERTERS
from ovdense.model_zoo import list_presets

ROOT = Path(__file__).resolve().parents[1]
OVDENSE = shutil.which("ovdense")
needs_script = pytest.mark.skipif(
    OVDENSE is None, reason="no 'ovdense' on PATH: pip install -e . creates it"
)


def _env() -> dict[str, str]:
    # the package of this checkout, also when the command on PATH belongs to another install
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "CUDA_VISIBLE_DEVICES": ""}


def _ovdense(*argv: str, module: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ovdense"] if module or OVDENSE is None else [OVDENSE]
    return subprocess.run(
        [*cmd, *argv], capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT
    )


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# -- the installed command (subprocesses) -------------------------------------------------------
@needs_script
def test_console_script_help_and_unknown_command():
    proc = _ovdense("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ovdense <command>")
    for name in COMMANDS:
        assert f"\n  {name} " in proc.stdout, name
    proc = _ovdense("evl")
    assert proc.returncode == 2 and proc.stdout == ""
    line = _one_error_line(proc.stderr)
    assert line.startswith("error: Unknown command 'evl'. Did you mean 'eval'?")


def test_python_dash_m_ovdense_is_the_same_command():
    proc = _ovdense("--version", module=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ovdense {ovdense.__version__}"


@needs_script
def test_presets_lists_what_config_accepts():
    proc = _ovdense("presets")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert sorted(rows) == sorted(list_presets())
    assert "seg/naclip_vitb16.py" in rows["naclip"] and "NACLIP" in rows["naclip"]


@needs_script
def test_demo_on_a_tiny_preset(tmp_path, tiny_preset):
    image = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    proc = _ovdense(
        "demo", "--config", str(tiny_preset("naclip")), "--input", str(image),
        "--classes", "cat,dog|puppy", "--output", str(out), "--device", "cpu",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Wrote 1 result(s)" in proc.stdout
    written = {p.name for p in out.iterdir()}
    assert written == {"photo_labels.png", "photo_overlay.jpg", "photo.json"}
    assert json.loads((out / "photo.json").read_text())["classes"] == ["cat", "dog"]


@needs_script
def test_prepare_runs_a_converter_under_its_name():
    proc = _ovdense("prepare", "coco", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ovdense prepare coco ")


def test_converters_run_as_modules():
    for name, (module, _) in CONVERTERS.items():
        assert module == f"ovdense.data.converters.{name}"
    proc = subprocess.run(
        [sys.executable, "-m", "ovdense.data.converters.coco", "--help"],
        capture_output=True, text=True, timeout=120, env=_env(), cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0 and "stuff" in proc.stdout and "object" in proc.stdout


# -- in process: every sub-command, its usage line and the error path ---------------------------
@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_under_its_name(name, capsys):
    try:
        code = main([name, "--help"])
    except SystemExit as exit_:  # argparse's --help
        code = exit_.code
    assert code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ovdense {name}"), out[:200]
    assert callable(importlib.import_module(COMMANDS[name].module).main)


def test_help_command_and_underscore_names(capsys):
    with pytest.raises(SystemExit):
        main(["help", "eval-all"])
    assert capsys.readouterr().out.startswith("usage: ovdense eval-all")
    with pytest.raises(SystemExit):
        main(["eval_all", "--help"])  # the tool's file name works too
    assert capsys.readouterr().out.startswith("usage: ovdense eval-all")


def test_sub_command_user_error_is_exit_2(tiny_preset, tmp_path, capsys):
    rc = main(["eval", "--config", "nope", "--dataset", "ade20k_150", "--device", "cpu"])
    assert rc == 2
    assert "Unknown preset 'nope'" in _one_error_line(capsys.readouterr().err)


def test_ctrl_c_keeps_the_tool_hint(monkeypatch, capsys):
    tool = importlib.import_module("ovdense.cli.eval_seg")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tool, "run_eval", interrupted)
    assert main(["eval", "--config", "naclip", "--dataset", "voc21", "--device", "cpu"]) == 130
    assert capsys.readouterr().err.strip() == f"interrupted; {tool.INTERRUPT_HINT}"


def test_argv_zero_is_restored(capsys):
    before = list(sys.argv)
    with pytest.raises(SystemExit):
        run_tool("ovdense.cli.presets", ["--help"], prog="ovdense presets")
    assert sys.argv == before
    assert capsys.readouterr().out.startswith("usage: ovdense presets")


def test_no_command_and_unknown_names(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: give a command")
    assert main(["prepare", "cityscape"]) == 2
    assert "Did you mean 'cityscapes'?" in _one_error_line(capsys.readouterr().err)
    assert main(["prepare"]) == 2
    err = capsys.readouterr().err
    assert all(f"\n  {name} " in err for name in CONVERTERS)
    assert err.strip().splitlines()[-1].startswith("error: name a dataset: coco")


def test_prepare_missing_input_is_exit_2(tmp_path, capsys):
    assert main(["prepare", "cityscapes", "--data-root", str(tmp_path)]) == 2
    assert "gtFine" in _one_error_line(capsys.readouterr().err)


def test_presets_groups_and_names(capsys):
    assert main(["presets", "shapes", "--names"]) == 0
    names = capsys.readouterr().out.split()
    assert names == [p for p in list_presets() if p.startswith("shapes/")]
    with pytest.raises(SystemExit) as exit_:
        main(["presets", "nogroup"])
    assert exit_.value.code == 2 and "unknown group(s) nogroup" in capsys.readouterr().err


def test_demo_user_error_is_one_line(tmp_path, capsys):
    argv = ["demo", "--input", str(tmp_path / "x.png"), "--classes", "cat", "--output"]
    assert main([*argv, str(tmp_path / "out"), "--alpha", "5"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: argument --alpha: must be a number in [0, 1], got 5")
