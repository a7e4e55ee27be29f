"""The error path of the evaluation tools (issue #10): every user error is one line on stderr
and exit code 2, through ``ovdense.utils.cli.run_cli`` (and the tools' ``__main__`` blocks)."""

from __future__ import annotations

import importlib
import json
import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import write_ade_layout
from PIL import Image

from ovdense.utils.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def _tool(name):
    """The tool's module in the package (``tools/<name>.py`` is a wrapper around it)."""
    return importlib.import_module(f"ovdense.cli.{name}")


def _one_error_line(err: str) -> str:
    """The one ``error:`` line of stderr (the progress bar may be there too, nothing else)."""
    lines = [line for line in err.splitlines() if line.strip() and "img/s]" not in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


@pytest.fixture()
def ade(tmp_path, tiny_preset):
    root = write_ade_layout(tmp_path / "data")
    return root, tiny_preset("sclip")


def _seg_args(preset, root, out, *more):
    return [
        "--config", str(preset), "--dataset", "ade20k_150", "--data-root", str(root),
        "--output", str(out), "--device", "cpu", *more,
    ]  # fmt: skip


# -- --device cuda on a machine without a GPU --------------------------------------------------
@NO_GPU
@pytest.mark.parametrize("name", ["eval_seg", "eval_all", "eval_regions", "eval_shapes"])
def test_cuda_without_gpu_is_one_line(name, ade, tmp_path, capsys, monkeypatch):
    root, preset = ade
    tool = _tool(name)
    called = []
    for attr in ("run_eval", "run", "evaluate"):  # nothing may be built or run
        if hasattr(tool, attr):
            monkeypatch.setattr(tool, attr, lambda *a, _name=attr, **k: called.append(_name))
    argv = {
        "eval_seg": _seg_args(preset, root, tmp_path / "o"),
        "eval_all": ["--config", str(preset), "--datasets", "ade20k_150"],
        "eval_regions": ["--config", str(preset), "--dataset", "shapes_det"],
        "eval_shapes": ["--output", str(tmp_path / "o")],
    }[name]
    argv = [a for a in argv if a != "cpu" and a != "--device"] + ["--device", "cuda"]
    assert run_cli(tool.main, argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "'cuda'" in line and "--device cpu" in line
    assert called == []


# -- eval_seg: fingerprint, --overwrite, lock, nothing evaluated -------------------------------
def test_eval_seg_other_settings_exit_2_then_overwrite(ade, tmp_path, capsys):
    root, preset = ade
    tool = _tool("eval_seg")
    out = tmp_path / "out"
    assert run_cli(tool.main, _seg_args(preset, root, out, "--limit", "2")) == 0
    capsys.readouterr()
    assert run_cli(tool.main, _seg_args(preset, root, out, "model.strategy=vanilla")) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "model.strategy: sclip -> vanilla" in line and "--overwrite" in line
    assert "strategy: sclip" in (out / "config.yaml").read_text()
    argv = _seg_args(preset, root, out, "model.strategy=vanilla", "--overwrite")
    assert run_cli(tool.main, argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["num_images"] == 4 and res["resumed_images"] == 0
    assert "strategy: vanilla" in (out / "config.yaml").read_text()
    # the same settings again resume everything, and say so
    capsys.readouterr()
    assert run_cli(tool.main, _seg_args(preset, root, out, "model.strategy=vanilla")) == 0
    assert "resumed 4 of 4 images" in capsys.readouterr().out


def test_eval_seg_all_skipped_exit_2_and_no_results(ade, tmp_path, capsys):
    root, preset = ade
    for f in (root / "ADEChallengeData2016/annotations/validation").glob("*.png"):
        Image.fromarray(np.zeros((7, 7), np.uint8)).save(f)
    out = tmp_path / "out"
    assert run_cli(_tool("eval_seg").main, _seg_args(preset, root, out)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: no image could be evaluated: 4 of 4 skipped, first reason: ")
    assert not (out / "results.json").exists() and not (out / "results.md").exists()


def test_eval_seg_locked_folder_exit_2(ade, tmp_path, capsys):
    root, preset = ade
    out = tmp_path / "out"
    out.mkdir()
    lock = out / "eval.lock"
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    assert run_cli(_tool("eval_seg").main, _seg_args(preset, root, out)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(lock) in line and "in use" in line
    assert lock.is_file()  # not ours: left alone


# -- eval_all ----------------------------------------------------------------------------------
def _script(name, *argv):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / f"{name}.py"), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_eval_all_unknown_preset_and_keys_exit_2(ade, tmp_path):
    """As ``eval_seg.py``: one line, exit 2, no traceback, whatever the argument order."""
    root, preset = ade
    base = ["--data-root", str(root), "--output", str(tmp_path / "all"), "--device", "cpu"]
    proc = _script("eval_all", "--config", "nope", "--datasets", "ade20k_150", *base)
    assert proc.returncode == 2
    assert "Unknown preset 'nope'" in _one_error_line(proc.stderr)
    for argv in (
        ["--config", str(preset), "model.nokey=3", "--datasets", "ade20k_150"],
        ["--config", str(preset), "--datasets", "ade20k_150", "model.nokey=3"],
    ):
        proc = _script("eval_all", *argv, *base)
        assert proc.returncode == 2, proc.stderr
        assert "Unknown config key 'model.nokey'" in _one_error_line(proc.stderr)
    assert not (tmp_path / "all" / "ade20k_150").exists()  # stopped before any benchmark


def test_eval_all_overrides_after_datasets_are_applied(ade, tmp_path):
    root, preset = ade
    out = tmp_path / "all"
    argv = ["--config", str(preset), "--datasets", "ade20k_150", "model.strategy=vanilla"]
    argv += ["--data-root", str(root), "--output", str(out), "--device", "cpu", "--limit", "1"]
    assert run_cli(_tool("eval_all").main, argv) == 0
    assert "strategy: vanilla" in (out / "ade20k_150" / "config.yaml").read_text()


def test_eval_all_other_settings_stop_with_exit_2(ade, tmp_path, capsys):
    root, preset = ade
    tool = _tool("eval_all")
    out = tmp_path / "all"
    argv = ["--config", str(preset), "--datasets", "ade20k_150", "--data-root", str(root)]
    argv += ["--output", str(out), "--device", "cpu", "--limit", "1"]
    assert run_cli(tool.main, argv) == 0
    before = (out / "table.json").read_text()
    capsys.readouterr()
    assert run_cli(tool.main, [*argv, "model.strategy=vanilla"]) == 2
    assert "model.strategy: sclip -> vanilla" in _one_error_line(capsys.readouterr().err)
    assert (out / "table.json").read_text() == before
    assert run_cli(tool.main, [*argv, "model.strategy=vanilla", "--overwrite"]) == 0
    assert "strategy: vanilla" in (out / "ade20k_150" / "config.yaml").read_text()


def test_eval_all_benchmark_with_every_image_skipped(ade, tmp_path, capsys):
    root, preset = ade
    for f in (root / "ADEChallengeData2016/annotations/validation").glob("*.png"):
        Image.fromarray(np.zeros((7, 7), np.uint8)).save(f)
    out = tmp_path / "all"
    argv = ["--config", str(preset), "--datasets", "voc21", "ade20k_150", "--data-root"]
    argv += [str(root), "--output", str(out), "--device", "cpu"]
    assert run_cli(_tool("eval_all").main, argv) == 2
    err = capsys.readouterr().err
    assert "ade20k_150: not evaluated (no image could be evaluated: 4 of 4 skipped" in err
    assert err.strip().splitlines()[-1].startswith("error: every image was skipped on ade20k_150")
    table = json.loads((out / "table.json").read_text())
    assert table["mIoU"] == {"voc21": None, "ade20k_150": None}
    assert not (out / "ade20k_150" / "results.json").exists()


def test_eval_all_table_is_replaced_atomically(ade, tmp_path):
    root, preset = ade
    out = tmp_path / "all"
    out.mkdir()
    for name in ("table.md", "table.json"):
        (tmp_path / name).write_text("old")
        os.link(tmp_path / name, out / name)
    argv = ["--config", str(preset), "--datasets", "ade20k_150", "--data-root", str(root)]
    assert run_cli(_tool("eval_all").main, [*argv, "--output", str(out), "--limit", "1"]) == 0
    for name in ("table.md", "table.json"):
        assert (tmp_path / name).read_text() == "old"
        assert (out / name).read_text() != "old"


# -- Ctrl-C ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["eval_seg", "eval_all"])
def test_interrupt_says_that_running_again_resumes(name, ade, tmp_path, monkeypatch, capsys):
    import ovdense.evaluation.runner as runner

    root, preset = ade

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_eval", interrupted)
    monkeypatch.setattr(_tool(name), "run_eval", interrupted)  # as the tool imported it
    monkeypatch.chdir(tmp_path)
    argv = (
        _seg_args(preset, root, tmp_path / "o")
        if name == "eval_seg"
        else ["--config", str(preset), "--datasets", "ade20k_150", "--data-root", str(root)]
    )
    monkeypatch.setattr(sys, "argv", [name, *argv])
    try:
        runpy.run_path(str(ROOT / "tools" / f"{name}.py"), run_name="__main__")
        code = None
    except SystemExit as exit_:
        code = exit_.code
    except KeyboardInterrupt:  # not handled by the tool: a traceback for the user
        code = "KeyboardInterrupt escaped"
    assert code == 130
    err = capsys.readouterr().err.strip()
    assert err == (
        "interrupted; run the same command again to resume (the predictions made so far are kept)"
    )
