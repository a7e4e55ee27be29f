"""The options the commands share (one definition in ``ovdense.utils.cli``) and the one
torchrun set-up (``ovdense.engine.distributed.init_distributed``) of training and evaluation."""

from __future__ import annotations

import argparse
import importlib

import pytest
import torch

import ovdense.evaluation.runner as runner
from ovdense.engine import distributed
from ovdense.engine.distributed import DistInfo, init_distributed
from ovdense.utils.cli import (
    add_device_argument,
    add_model_source_arguments,
    add_output_argument,
    add_overrides_argument,
    model_source,
)


def test_shared_options_parse_and_read_back():
    p = argparse.ArgumentParser()
    add_model_source_arguments(p)
    add_device_argument(p)
    add_output_argument(p, required=True)
    add_overrides_argument(p)
    args = p.parse_intermixed_args(
        [
            "model.window=None",
            "--model",
            "ViT-B-16",
            "--checkpoint",
            "w.bin",
            "--output",
            "o",
            "a=1",
        ]
    )
    assert model_source(args) == {"model": "ViT-B-16", "pretrained": None, "checkpoint": "w.bin"}
    assert args.device is None and args.output == "o"
    assert args.opts == ["model.window=None", "a=1"]
    q = argparse.ArgumentParser()
    add_model_source_arguments(q, model_default="ViT-B-16", checkpoint_help=None)
    assert model_source(q.parse_args([])) == {
        "model": "ViT-B-16",
        "pretrained": None,
        "checkpoint": None,
    }


COMMON = ["--model", "ViT-B-32", "--pretrained", "openai", "--checkpoint", "w.bin"]


@pytest.mark.parametrize(
    "module, argv",
    [
        ("demo", ["--input", "x.png", "--classes", "cat", "--output", "out"]),
        ("eval_seg", ["--config", "naclip", "--dataset", "voc21", "--output", "out"]),
        ("eval_all", ["--config", "naclip", "--output", "out"]),
        ("eval_regions", ["--config", "naclip", "--dataset", "shapes_det", "--output", "out"]),
    ],
)
def test_every_segmentor_command_takes_the_same_clip_options(module, argv):
    tool = importlib.import_module(f"ovdense.cli.{module}")
    args = tool.parse_args([*argv, *COMMON, "--device", "cpu", "model.window=None"])
    assert model_source(args) == {
        "model": "ViT-B-32",
        "pretrained": "openai",
        "checkpoint": "w.bin",
    }
    assert args.device == "cpu" and args.output == "out" and args.opts == ["model.window=None"]


def test_eval_regions_applies_the_clip_options(tiny_preset, tmp_path, monkeypatch):
    """``--checkpoint`` reaches the preset's load_clip node (read before any model is built)."""
    tool = importlib.import_module("ovdense.cli.eval_regions")
    seen = {}

    def stop(name, overrides=()):
        seen["overrides"] = list(overrides)
        raise KeyboardInterrupt

    monkeypatch.setattr(tool, "get_config", stop)
    monkeypatch.setattr(tool, "get_instances_files", lambda *a: (None, None))
    monkeypatch.setattr(tool, "CocoInstances", lambda *a, **k: None)
    args = tool.parse_args(["--config", "naclip", "--dataset", "shapes_det"])
    args.checkpoint = "w.bin"
    with pytest.raises(KeyboardInterrupt):
        tool.run(args)
    assert seen["overrides"] == ["model.clip.checkpoint='w.bin'"]


# -- one init_distributed ---------------------------------------------------------------------
def test_one_init_distributed():
    assert not hasattr(runner, "barrier")
    assert runner.init_distributed is distributed.init_distributed
    import ovdense.engine.trainer as trainer

    assert trainer.init_distributed is distributed.init_distributed


def test_world_of_one_initialises_nothing(monkeypatch):
    for name in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "3")
    info = init_distributed(device="cpu")
    assert info == DistInfo(0, 1, 3) and info.is_main
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        init_distributed()


def test_local_device():
    info = DistInfo(rank=5, world_size=8, local_rank=1)
    assert info.local_device("cuda") == torch.device("cuda", 1)  # torchrun's GPU of the process
    assert info.local_device("cuda:0") == torch.device("cuda", 0)  # as given
    assert info.local_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda", 1) if torch.cuda.is_available() else torch.device("cpu")
    assert info.local_device(None) == expected
    assert DistInfo().local_device("cuda") == torch.device("cuda", 0)


def test_backend_follows_the_device(monkeypatch):
    calls = []
    monkeypatch.setattr(
        distributed.dist, "init_process_group", lambda **kw: calls.append(kw["backend"])
    )
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.torch.cuda, "set_device", lambda i: calls.append(f"gpu{i}"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert init_distributed(device="cpu") == DistInfo(1, 2, 1)
    assert init_distributed(device="cuda") == DistInfo(1, 2, 1)
    assert init_distributed(backend="gloo", device="cuda:1") == DistInfo(1, 2, 1)
    assert calls == ["gloo", "gpu1", "nccl", "gloo"]
