"""The shipped mmseg configs and a one-call test run (``tools/mmseg_test.py`` wraps it)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CONFIGS_DIR", "METHODS", "BENCHMARKS", "config_path", "run_test"]

#: mmseg configs: ``<method>/<method>_<benchmark>.py`` over ``_base_/`` (runtime, datasets).
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"

#: The training-free presets with an mmseg config per benchmark.
METHODS = (
    "maskclip",
    "sclip",
    "clearclip",
    "naclip",
    "proxyclip",
    "clip_dinoiser",
    "resclip",
    "scclip",
    "corrclip",
    "trident",
)

#: ovdense benchmark name -> the mmseg dataset config under ``_base_/datasets``.
BENCHMARKS = (
    "voc21",
    "context60",
    "coco_object",
    "voc20",
    "context59",
    "coco_stuff171",
    "cityscapes",
    "ade20k_150",
)


def config_path(method: str, benchmark: str) -> Path:
    """The shipped config of ``method`` (one of :data:`METHODS`) on ``benchmark``."""
    path = CONFIGS_DIR / method / f"{method}_{benchmark}.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"No shipped mmseg config {path.name}: methods {', '.join(METHODS)}; benchmarks "
            f"{', '.join(BENCHMARKS)}."
        )
    return path


def run_test(
    config: str | os.PathLike,
    work_dir: str | os.PathLike = "output/mmseg",
    cfg_options: Mapping[str, Any] | None = None,
    data_root: str | os.PathLike | None = None,
    launcher: str = "none",
) -> dict[str, float]:
    """mmseg's test loop on ``config`` (a path, or ``"<method>_<benchmark>"`` of a shipped
    config); returns the metrics. ``data_root`` replaces the test dataset's root."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    text = str(config)
    if not Path(text).is_file() and "_" in text and not text.endswith(".py"):
        method = next((m for m in METHODS if text.startswith(m + "_")), None)
        if method is not None:
            config = config_path(method, text[len(method) + 1 :])
    cfg = Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    if data_root is not None:
        sub = cfg.get("dataset_subdir")
        root = Path(data_root) / sub if sub else Path(data_root)
        cfg.test_dataloader.dataset.data_root = str(root)
    cfg.work_dir = str(work_dir)
    cfg.launcher = launcher
    return Runner.from_cfg(cfg).test()


def _parse_options(items: Sequence[str]) -> dict[str, Any]:
    from mmengine.config import DictAction

    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = DictAction._parse_iterable(value)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python tools/mmseg_test.py CONFIG [--work-dir D] [--data-root R] [--cfg-options k=v]``."""
    import argparse
    import json

    p = argparse.ArgumentParser(
        description="Run mmseg's test loop on an ovdense mmseg config (a file, or "
        "<method>_<benchmark> of a shipped one, e.g. naclip_voc21)."
    )
    p.add_argument("config")
    p.add_argument("--work-dir", default="output/mmseg")
    p.add_argument("--data-root", default=None, help="the test dataset's root folder")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--launcher", default="none", choices=["none", "pytorch", "slurm", "mpi"])
    args = p.parse_args(argv)
    metrics = run_test(
        args.config,
        args.work_dir,
        _parse_options(args.cfg_options),
        args.data_root,
        args.launcher,
    )
    print(json.dumps({k: float(v) for k, v in metrics.items()}, indent=2))
    return 0
