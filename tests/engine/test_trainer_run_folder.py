"""The trainer's output folder: one run per folder, Ctrl-C checkpoints, atomic files, a metrics
log without ghost iterations, and option values checked before anything is built."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_toy import TinyRegressor
from test_trainer import CONFIG_FILE, HERE, make_cfg, params

from ovdense.config import L, LazyConfig
from ovdense.engine import Trainer, load_checkpoint, load_train_config, merge_train_defaults
from ovdense.engine.checkpoint import read_last_checkpoint
from ovdense.utils.cli import UserError
from ovdense.utils.io import temporary_sibling


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _iters(folder: Path) -> list[int]:
    path = folder / "metrics.jsonl"
    return [json.loads(x)["iter"] for x in path.read_text().splitlines()]


class _Boom:
    """A model whose construction fails: proves a check ran before the model was built."""

    def __init__(self) -> None:
        raise AssertionError("the model was built before the options were checked")


# -- 3. one run per output folder ------------------------------------------------------------


def test_training_into_a_run_folder_without_resume_is_refused(tmp_path):
    Trainer(make_cfg(tmp_path, max_iter=2)).train()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    cfg = make_cfg(tmp_path, max_iter=3)
    cfg.model = L(_Boom)()
    with pytest.raises(UserError) as info:
        Trainer(cfg)
    msg = str(info.value)
    assert "already holds a training run" in msg and str(tmp_path) in msg
    assert "--resume" in msg and "--overwrite" in msg and "\n" not in msg
    # nothing was touched: last_checkpoint still names the old run's checkpoint
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert read_last_checkpoint(tmp_path).name == "model_0000002.pt"


@pytest.mark.parametrize("leftover", ["metrics.jsonl", "model_0000005.pt", "last_checkpoint"])
def test_any_file_of_a_run_marks_the_folder(tmp_path, leftover):
    (tmp_path / leftover).write_text("x")
    with pytest.raises(UserError, match=leftover):
        Trainer(make_cfg(tmp_path, max_iter=2))


def test_a_folder_with_other_files_is_usable(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "config.yaml").write_text("a: 1\n")  # a run that failed before training
    Trainer(make_cfg(tmp_path, max_iter=2)).train()
    assert read_last_checkpoint(tmp_path).name == "model_0000002.pt"


def test_overwrite_removes_only_what_the_trainer_wrote(tmp_path):
    Trainer(make_cfg(tmp_path, max_iter=4, checkpoint_period=2, log_period=1)).train()
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "model_best.pt").write_text("mine too")
    assert {"model_0000002.pt", "model_0000004.pt"} <= {p.name for p in tmp_path.iterdir()}
    trainer = Trainer(make_cfg(tmp_path, max_iter=3, log_period=1), overwrite=True)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"notes.txt", "model_best.pt", "config.yaml"}
    assert LazyConfig.load(tmp_path / "config.yaml").train.max_iter == 3
    trainer.train()
    assert _iters(tmp_path) == [1, 2, 3]
    assert read_last_checkpoint(tmp_path).name == "model_0000003.pt"
    assert not (tmp_path / "model_0000004.pt").exists()
    with pytest.raises(ValueError, match="exclude each other"):
        Trainer(make_cfg(tmp_path), resume=True, overwrite=True)


# -- 4. Ctrl-C --------------------------------------------------------------------------------


def _interrupt_forward(trainer: Trainer, at_call: int) -> None:
    """Make the model's ``at_call``-th forward run (consuming the RNG) and then raise Ctrl-C."""
    model = trainer.model
    real = type(model).forward
    calls = {"n": 0}

    def forward(batch):
        out = real(model, batch)
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return out

    model.forward = forward


def test_ctrl_c_between_steps_saves_the_iteration_and_resume_is_exact(tmp_path, monkeypatch):
    full = Trainer(make_cfg(tmp_path / "full", checkpoint_period=0))
    full.train()
    part = Trainer(make_cfg(tmp_path / "part", checkpoint_period=0))
    real_step = Trainer.run_step
    calls = {"n": 0}

    def step(self, batches):
        calls["n"] += 1
        if calls["n"] == 5:  # Ctrl-C at the start of the 5th step: 4 are done
            raise KeyboardInterrupt
        return real_step(self, batches)

    monkeypatch.setattr(Trainer, "run_step", step)
    with pytest.raises(KeyboardInterrupt):
        part.train()
    monkeypatch.setattr(Trainer, "run_step", real_step)
    assert read_last_checkpoint(tmp_path / "part").name == "model_0000004.pt"
    assert load_checkpoint(tmp_path / "part" / "model_0000004.pt")["iter"] == 4
    torch.manual_seed(77)
    resumed = Trainer(make_cfg(tmp_path / "part", checkpoint_period=0), resume=True)
    assert resumed.iter == 4
    resumed.train()
    for a, b in zip(params(full), params(resumed), strict=True):
        assert torch.equal(a, b)


def test_ctrl_c_inside_a_step_rewinds_it(tmp_path):
    # grad_accum=2: the interrupt comes in the 2nd forward of step 4, after one backward, one
    # batch and some dropout randomness were consumed; the checkpoint is the state after 3.
    full = Trainer(make_cfg(tmp_path / "full", checkpoint_period=0, grad_accum=2))
    full.train()
    part = Trainer(make_cfg(tmp_path / "part", checkpoint_period=0, grad_accum=2))
    _interrupt_forward(part, at_call=8)
    with pytest.raises(KeyboardInterrupt):
        part.train()
    assert read_last_checkpoint(tmp_path / "part").name == "model_0000003.pt"
    ckpt = load_checkpoint(tmp_path / "part" / "model_0000003.pt")
    assert ckpt["iter"] == 3 and ckpt["data"]["batch_in_epoch"] == 1  # 6 of 5 batches/epoch
    assert ckpt["data"]["epoch"] == 1
    resumed = Trainer(make_cfg(tmp_path / "part", checkpoint_period=0, grad_accum=2), resume=True)
    resumed.train()
    for a, b in zip(params(full), params(resumed), strict=True):
        assert torch.equal(a, b)


def test_ctrl_c_during_the_update_keeps_the_previous_checkpoint(tmp_path, caplog, monkeypatch):
    trainer = Trainer(make_cfg(tmp_path, checkpoint_period=2))
    cls = type(trainer.scheduler)
    real = cls.step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        real(self, *args, **kwargs)
        if calls["n"] == 3:  # weights of step 3 updated, the step not counted yet
            raise KeyboardInterrupt

    monkeypatch.setattr(cls, "step", step)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert read_last_checkpoint(tmp_path).name == "model_0000002.pt"
    assert not (tmp_path / "model_0000003.pt").exists()
    assert "no checkpoint of iteration 3" in caplog.text


def test_real_ctrl_c_during_the_update_waits_for_its_end(tmp_path, monkeypatch):
    full = Trainer(make_cfg(tmp_path / "full", checkpoint_period=0))
    full.train()
    part = Trainer(make_cfg(tmp_path / "part", checkpoint_period=0))
    cls = type(part.scheduler)
    real = cls.step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # SIGINT while the optimizer has updated but the schedule has not
            os.kill(os.getpid(), signal.SIGINT)
        real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "step", step)
    with pytest.raises(KeyboardInterrupt):
        part.train()
    monkeypatch.setattr(cls, "step", real)
    assert read_last_checkpoint(tmp_path / "part").name == "model_0000003.pt"
    resumed = Trainer(make_cfg(tmp_path / "part", checkpoint_period=0), resume=True)
    assert resumed.iter == 3
    resumed.train()
    for a, b in zip(params(full), params(resumed), strict=True):
        assert torch.equal(a, b)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# -- 2. atomic files, metrics trimmed on resume, stale temporaries -----------------------------


def test_resume_trims_metrics_to_the_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(make_cfg(tmp_path, checkpoint_period=4, log_period=1))
    real_step = Trainer.run_step
    calls = {"n": 0}

    def step(self, batches):
        calls["n"] += 1
        if calls["n"] == 7:  # a crash (not Ctrl-C): no checkpoint after iteration 4
            raise RuntimeError("killed")
        return real_step(self, batches)

    monkeypatch.setattr(Trainer, "run_step", step)
    with pytest.raises(RuntimeError, match="killed"):
        trainer.train()
    monkeypatch.setattr(Trainer, "run_step", real_step)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"iter": 7, "lo')  # a line cut by the kill
    assert _iters_tolerant(tmp_path) == [1, 2, 3, 4, 5, 6]
    resumed = Trainer(make_cfg(tmp_path, checkpoint_period=4, log_period=1), resume=True)
    assert resumed.iter == 4
    assert _iters(tmp_path) == [1, 2, 3, 4]
    resumed.train()
    assert _iters(tmp_path) == list(range(1, 11))


def _iters_tolerant(folder: Path) -> list[int]:
    out = []
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line)["iter"])
        except ValueError:
            pass
    return out


def test_resume_without_checkpoint_drops_the_whole_log(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iter": 1, "loss": 1.0}\n{"iter": 2, "loss": 0.5}\n')
    trainer = Trainer(make_cfg(tmp_path, max_iter=2, log_period=1), resume=True)
    assert trainer.iter == 0 and (tmp_path / "metrics.jsonl").read_text() == ""
    trainer.train()
    assert _iters(tmp_path) == [1, 2]


def test_config_yaml_is_written_atomically(tmp_path, monkeypatch):
    Trainer(make_cfg(tmp_path, max_iter=2)).train()
    good = (tmp_path / "config.yaml").read_text()
    real_write = Path.write_text

    def full_disk(self, data, *args, **kwargs):
        if self.name.startswith(".config.yaml") or self.name == "config.yaml":
            real_write(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(28, "No space left on device (simulated)")
        return real_write(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="simulated"):
        Trainer(make_cfg(tmp_path, max_iter=4), resume=True)
    monkeypatch.setattr(Path, "write_text", real_write)
    assert (tmp_path / "config.yaml").read_text() == good
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_metrics_line_is_rolled_back_when_the_disk_is_full(tmp_path, monkeypatch):
    trainer = Trainer(make_cfg(tmp_path, max_iter=4, log_period=1))
    real_write = os.write
    calls = {"n": 0}

    def short_write(fd, data):
        calls["n"] += 1
        if calls["n"] == 3:
            return real_write(fd, data[:5])  # a partial line, as on a full disk
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", short_write)
    with pytest.raises(OSError):
        trainer.train()
    monkeypatch.setattr(os, "write", real_write)
    assert (tmp_path / "metrics.jsonl").read_text().endswith("\n")
    assert _iters(tmp_path) == [1, 2]


def test_stale_temporaries_of_killed_runs_are_removed_at_start(tmp_path):
    dead = _dead_pid()
    stale = [tmp_path / f".model_0000004.pt.{dead}.tmp", tmp_path / f".config.yaml.{dead}.yaml"]
    live = temporary_sibling(tmp_path / "model_0000002.pt")  # this process: still writing
    for p in [*stale, live]:
        p.write_text("partial")
    Trainer(make_cfg(tmp_path, max_iter=2))
    assert not any(p.exists() for p in stale)
    assert live.exists()


# -- 5. option values checked before anything is built ----------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_iter=abc", "train.max_iter: expected a positive integer, got 'abc'."),
        ("train.max_iter=-5", "train.max_iter: expected a positive integer, got -5."),
        ("train.max_iter=2.5", "train.max_iter: expected a positive integer, got 2.5."),
        ("train.grad_accum=0", "train.grad_accum: expected a positive integer, got 0."),
        (
            "train.checkpoint_period=-1",
            "train.checkpoint_period: expected a non-negative integer, got -1.",
        ),
        (
            "train.log_period=often",
            "train.log_period: expected a non-negative integer, got 'often'.",
        ),
        ("train.eval_period=-3", "train.eval_period: expected a non-negative integer, got -3."),
        ("train.clip_grad=abc", "train.clip_grad: expected a positive number or None, got 'abc'."),
        ("train.clip_grad=0", "train.clip_grad: expected a positive number or None, got 0."),
        ("train.seed=x", "train.seed: expected a non-negative integer, got 'x'."),
        ("train.amp=fp8", "train.amp: expected one of False, True, 'fp16', 'bf16', got 'fp8'."),
        ("dataloader.batch_size=0", "dataloader.batch_size: expected a positive integer, got 0."),
        ("dataloader.shuffle=maybe", "dataloader.shuffle: expected True or False, got 'maybe'."),
        ("optimizer.lr=fast", "optimizer.lr: expected a number, got 'fast'."),
        ("optimizer.momentum=lots", "optimizer.momentum: expected a number, got 'lots'."),
    ],
)
def test_bad_values_name_the_key_before_anything_is_built(tmp_path, override, message):
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text(CONFIG_FILE.format(here=str(HERE)))
    with pytest.raises(ValueError) as info:
        load_train_config(cfg_file, [override], str(tmp_path / "out"))
    assert str(info.value) == message
    # the Trainer checks the same values before it builds the model
    cfg = merge_train_defaults(LazyConfig.load(cfg_file))
    LazyConfig.apply_overrides(cfg, [override])
    cfg.model = L(_Boom)()
    cfg.train.output_dir = str(tmp_path / "out")
    with pytest.raises(ValueError) as info:
        Trainer(cfg)
    assert str(info.value) == message
    assert not (tmp_path / "out").exists()


def test_checkpoint_period_zero_still_means_only_the_final_checkpoint(tmp_path):
    Trainer(make_cfg(tmp_path, max_iter=4, checkpoint_period=0)).train()
    assert sorted(p.name for p in tmp_path.glob("model_*.pt")) == ["model_0000004.pt"]


def test_optimizer_error_at_build_time_names_the_optimizer(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg.optimizer.lr = -1.0
    with pytest.raises(ValueError, match=r"^while building 'optimizer' \(SGD\): .*-1\.0"):
        Trainer(cfg)


# -- 6. device ---------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "tpu"])
def test_missing_device_is_one_line_before_anything_is_built(tmp_path, monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = make_cfg(tmp_path, device=device)
    cfg.model = L(_Boom)()
    with pytest.raises(UserError) as info:
        Trainer(cfg)
    msg = str(info.value)
    assert "\n" not in msg and repr(device) in msg
    assert ("no CUDA GPU" in msg) if device.startswith("cuda") else ("Unknown device" in msg)


def test_cpu_device_is_accepted(tmp_path):
    trainer = Trainer(make_cfg(tmp_path, max_iter=1, device="cpu"))
    assert trainer.device == torch.device("cpu")
    assert isinstance(trainer.model, TinyRegressor)
