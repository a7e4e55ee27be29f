import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_toy import GroupedRegressor, SyntheticRegression, TinyRegressor
from omegaconf import DictConfig

from ovdense.config import L, LazyConfig
from ovdense.engine import CheckpointError, Trainer, WarmupCosine, load_checkpoint
from ovdense.engine.checkpoint import read_last_checkpoint

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def make_cfg(out: Path, **train) -> DictConfig:
    cfg = DictConfig(
        {
            "model": L(TinyRegressor)(dim=4, dropout=0.2),
            "dataloader": {
                "dataset": L(SyntheticRegression)(n=40, dim=4, seed=1),
                "batch_size": 8,
                "shuffle": True,
            },
            "optimizer": L(torch.optim.SGD)(lr=0.05, momentum=0.9),
            "lr_scheduler": L(WarmupCosine)(max_iter=40, warmup_iters=3),
            "train": {"max_iter": 10, "output_dir": str(out), "log_period": 5, **train},
        },
        flags={"allow_objects": True},
    )
    return cfg


def params(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_loss_goes_down_and_outputs_written(tmp_path):
    cfg = make_cfg(tmp_path, max_iter=40, log_period=10)
    cfg.model.dropout = 0.0
    trainer = Trainer(cfg)
    trainer.train()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines] == [10, 20, 30, 40]
    assert lines[-1]["loss"] < 0.2 * lines[0]["loss"]
    assert {"loss_mse", "lr", "it_per_s", "images_per_s"} <= set(lines[0])
    assert (tmp_path / "config.yaml").is_file()
    assert LazyConfig.load(tmp_path / "config.yaml").train.max_iter == 40
    assert read_last_checkpoint(tmp_path).name == "model_0000040.pt"


def test_grad_accum_equals_bigger_batch(tmp_path):
    a = make_cfg(tmp_path / "a", max_iter=6, grad_accum=2)
    a.dataloader.batch_size = 4
    a.model.dropout = 0.0
    b = make_cfg(tmp_path / "b", max_iter=6)
    b.model.dropout = 0.0
    ta, tb = Trainer(a), Trainer(b)
    ta.train()
    tb.train()
    for pa, pb in zip(params(ta), params(tb)):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=0)


def test_resume_is_bit_exact(tmp_path):
    full = Trainer(make_cfg(tmp_path / "full", checkpoint_period=3))
    full.train()
    # interrupted run: 6 iterations (an epoch is 5 batches: crosses an epoch boundary).
    part = Trainer(make_cfg(tmp_path / "part", max_iter=6, checkpoint_period=3))
    part.train()
    torch.manual_seed(1234)  # disturb the global RNG: resume must restore it
    resumed = Trainer(make_cfg(tmp_path / "part", checkpoint_period=3), resume=True)
    assert resumed.iter == 6
    resumed.train()
    for pa, pb in zip(params(full), params(resumed)):
        assert torch.equal(pa, pb)
    ckpt = load_checkpoint(tmp_path / "part" / "model_0000010.pt")
    assert {"model", "optimizer", "scheduler", "scaler", "iter", "rng", "data"} <= set(ckpt)


def test_resume_without_checkpoint_starts_from_scratch(tmp_path):
    trainer = Trainer(make_cfg(tmp_path, max_iter=2), resume=True)
    assert trainer.iter == 0


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(make_cfg(tmp_path, max_iter=4, checkpoint_period=2))
    real_save = torch.save
    calls = {"n": 0}

    def flaky_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # second checkpoint: write a bit, then "crash"
            f.write(b"PK\x03\x04partial")
            raise OSError("disk full (simulated)")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(OSError, match="simulated"):
        trainer.train()
    monkeypatch.setattr(torch, "save", real_save)
    last = read_last_checkpoint(tmp_path)
    assert last.name == "model_0000002.pt"
    assert load_checkpoint(last)["iter"] == 2
    assert not (tmp_path / "model_0000004.pt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_truncated_and_foreign_checkpoints_give_clear_errors(tmp_path):
    Trainer(make_cfg(tmp_path, max_iter=2)).train()
    path = tmp_path / "model_0000002.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model_0000002.pt.*cannot be read"):
        Trainer(make_cfg(tmp_path, max_iter=4), resume=True)
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not written by the ovdense trainer"):
        load_checkpoint(path)


def test_unknown_train_key_suggests_closest(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg.train.max_iters = 3
    with pytest.raises(KeyError, match="Did you mean 'train.max_iter'"):
        Trainer(cfg)


def test_eval_hook_results_logged(tmp_path):
    seen = []

    def hook(model, iteration):
        assert not model.training
        seen.append(iteration)
        return {"val_metric": float(iteration)}

    Trainer(make_cfg(tmp_path, max_iter=4, eval_period=2), eval_hook=hook).train()
    assert seen == [2, 4]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"iter": 4, "val_metric": 4.0} in lines


CONFIG_FILE = """
import sys
sys.path.insert(0, {here!r})
import torch
from engine_toy import GroupedRegressor, SyntheticRegression, TinyRegressor
from ovdense.config import L
from ovdense.engine import WarmupCosine

model = L(TinyRegressor)(dim=4, dropout=0.0)
dataloader = dict(dataset=L(SyntheticRegression)(n=48, dim=4, seed=1), batch_size=8, shuffle=True)
optimizer = L(torch.optim.SGD)(lr=0.05, momentum=0.9)
lr_scheduler = L(WarmupCosine)(max_iter=8, warmup_iters=2)
train = dict(max_iter=8, log_period=4, checkpoint_period=4)
"""


def _run_cli(args, nproc=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    launcher = [sys.executable]
    if nproc:
        launcher += ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
        launcher += ["--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0"]
    return subprocess.run(
        [*launcher, str(REPO / "tools" / "train.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_cli_unknown_key_is_one_line(tmp_path):
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text(CONFIG_FILE.format(here=str(HERE)))
    r = _run_cli(["--config", str(cfg_file), "--output", str(tmp_path / "o"), "train.max_itr=3"])
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: Unknown config key")
    assert "train.max_iter" in r.stderr


def test_torchrun_two_processes_match_single_process(tmp_path):
    """2 processes x batch 4 (DDP averages gradients) == 1 process x batch 8.

    The DistributedSampler gives rank r the samples r, r+2, ... of the epoch's shuffled order,
    so both runs see the same 8 samples per step; only float summation order differs.
    """
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text(CONFIG_FILE.format(here=str(HERE)))
    single = _run_cli(["--config", str(cfg_file), "--output", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = _run_cli(
        ["--config", str(cfg_file), "--output", str(tmp_path / "two"), "dataloader.batch_size=4"],
        nproc=2,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = load_checkpoint(tmp_path / "one" / "model_0000008.pt")["model"]
    b = load_checkpoint(tmp_path / "two" / "model_0000008.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)
    assert (tmp_path / "two" / "metrics.jsonl").read_text().count("\n") == 2


def test_bf16_autocast_on_cpu(tmp_path):
    trainer = Trainer(make_cfg(tmp_path, max_iter=3, amp="bf16", clip_grad=1.0))
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    last = trainer.train()
    assert torch.isfinite(torch.tensor(last["loss"]))


def test_fp16_amp_on_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="needs CUDA"):
        Trainer(make_cfg(tmp_path, amp="fp16", device="cpu"))


def _grouped_cfg(out: Path, **model) -> DictConfig:
    cfg = make_cfg(out, max_iter=1)
    del cfg["model"]
    cfg.model = L(GroupedRegressor)(dim=4, **model)
    return cfg


def test_model_param_groups_set_per_group_options(tmp_path):
    trainer = Trainer(_grouped_cfg(tmp_path / "a", bias_lr=0.5))
    groups = trainer.optimizer.param_groups
    # the optimizer config's lr is the default; the scheduler scales both groups alike
    assert groups[1]["lr"] / groups[0]["lr"] == pytest.approx(0.5 / 0.05)
    assert groups[0]["params"] == [trainer.model.fc.weight]
    assert groups[1]["params"] == [trainer.model.fc.bias]
    with pytest.raises(ValueError, match="fc.bias"):
        Trainer(_grouped_cfg(tmp_path / "b", forget_bias=True))


def test_cli_overrides_before_and_after_options():
    spec = importlib.util.spec_from_file_location("train_tool", REPO / "tools" / "train.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = tool.parse_args(["--config", "c.py", "a=1", "--output", "o", "b.c=2", "--resume"])
    assert args.opts == ["a=1", "b.c=2"] and args.output == "o" and args.resume
