"""tools/train.py as a user runs it: Ctrl-C saves a checkpoint, a run folder needs --resume or
--overwrite, a missing GPU is one line (subprocesses, the tiny regression of tests/engine)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ovdense.cli import train as train_tool
from ovdense.engine import load_checkpoint
from ovdense.engine.checkpoint import read_last_checkpoint
from ovdense.utils.cli import run_cli

REPO = Path(__file__).resolve().parents[2]
ENGINE_TESTS = REPO / "tests" / "engine"

CONFIG = """
import sys
sys.path.insert(0, {here!r})
import torch
from engine_toy import SyntheticRegression, TinyRegressor
from ovdense.config import L
from ovdense.engine import WarmupCosine

model = L(TinyRegressor)(dim=4, dropout=0.1)
dataloader = dict(dataset=L(SyntheticRegression)(n=48, dim=4, seed=1), batch_size=8, shuffle=True)
optimizer = L(torch.optim.SGD)(lr=0.01, momentum=0.9)
lr_scheduler = L(WarmupCosine)(max_iter=8, warmup_iters=2)
train = dict(max_iter=8, log_period=4, checkpoint_period=4)
"""


@pytest.fixture()
def config(tmp_path) -> Path:
    path = tmp_path / "cfg.py"
    path.write_text(CONFIG.format(here=str(ENGINE_TESTS)))
    return path


def _env() -> dict[str, str]:
    # CUDA_VISIBLE_DEVICES="": no GPU, also on a machine that has one
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "CUDA_VISIBLE_DEVICES": "",
    }


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "train.py"), *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )


def _error_line(r: subprocess.CompletedProcess) -> str:
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    return lines[-1]


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(config, tmp_path):
    out = tmp_path / "run"
    args = ["--config", str(config), "--output", str(out), "train.checkpoint_period=0"]
    args += ["train.max_iter=100000000", "train.log_period=25"]
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "train.py"), *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 120
        metrics = out / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        "interrupted; a checkpoint was saved; run the same command with --resume to continue"
    )
    assert "Traceback" not in err
    last = read_last_checkpoint(out)
    stopped = load_checkpoint(last)["iter"]
    assert last.name == f"model_{stopped:07d}.pt" and stopped >= 50
    logged = [json.loads(x)["iter"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged and max(logged) <= stopped
    # the same command without --resume is refused, with --resume it continues from there
    again = _run([*args[:-2], f"train.max_iter={stopped + 3}", "train.log_period=1"])
    assert again.returncode == 2 and "--resume" in _error_line(again)
    resumed = _run([*args[:-2], f"train.max_iter={stopped + 3}", "train.log_period=1", "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(read_last_checkpoint(out))["iter"] == stopped + 3
    logged = [json.loads(x)["iter"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged[-3:] == [stopped + 1, stopped + 2, stopped + 3]
    assert len(logged) == len(set(logged))


def test_existing_run_needs_resume_or_overwrite(config, tmp_path):
    out = tmp_path / "run"
    first = _run(["--config", str(config), "--output", str(out)])
    assert first.returncode == 0, first.stderr[-2000:]
    before = (out / "last_checkpoint").read_text()
    second = _run(["--config", str(config), "--output", str(out), "train.max_iter=4"])
    assert second.returncode == 2
    line = _error_line(second)
    assert line.startswith("error: ") and "already holds a training run" in line
    assert "--resume" in line and "--overwrite" in line
    assert (out / "last_checkpoint").read_text() == before == "model_0000008.pt\n"
    third = _run(["--config", str(config), "--output", str(out), "train.max_iter=4", "--overwrite"])
    assert third.returncode == 0, third.stderr[-2000:]
    assert sorted(p.name for p in out.glob("model_*.pt")) == ["model_0000004.pt"]
    assert (out / "last_checkpoint").read_text() == "model_0000004.pt\n"
    both = _run(["--config", str(config), "--output", str(out), "--overwrite", "--resume"])
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_device_cuda_without_gpu_is_one_line(config, tmp_path):
    r = _run(["--config", str(config), "--output", str(tmp_path / "o"), "--device", "cuda"])
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert _error_line(r).startswith("error: Device 'cuda' was asked for but no CUDA GPU")
    assert not (tmp_path / "o").exists()


def test_main_raises_user_errors_and_run_cli_reports_them(config, tmp_path, capsys):
    args = ["--config", str(config), "--output", str(tmp_path / "o"), "train.max_iter=abc"]
    with pytest.raises(ValueError, match="train.max_iter: expected a positive integer"):
        train_tool.main(args)
    assert run_cli(train_tool.main, args) == 2
    err = capsys.readouterr().err
    assert err == "error: train.max_iter: expected a positive integer, got 'abc'.\n"


def test_bad_optimizer_value_is_one_line(config, tmp_path):
    r = _run(["--config", str(config), "--output", str(tmp_path / "o"), "optimizer.lr=fast"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert _error_line(r) == "error: optimizer.lr: expected a number, got 'fast'."
