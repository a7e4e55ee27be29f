"""Running a segmentor over a benchmark: config resolution, resumable predictions, metrics.

Used by ``tools/eval_seg.py`` and ``tools/eval_all.py``; works under ``torchrun`` (one shard of
the images per process, metrics summed across processes).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from tqdm.auto import tqdm

from ..config import LazyConfig, instantiate
from ..data import (
    DatasetFileError,
    SemSegDataset,
    build_semseg_dataset,
    get_metadata,
    parse_dataset_spec,
)
from ..model_zoo import ALIASES, CONFIGS_DIR, get_config_file
from ..utils.io import atomic_write, atomic_write_text
from ..utils.visualizer import load_label_png, save_label_png
from ..version import __version__
from .base import format_metric, json_safe
from .sem_seg import SemSegEvaluator

__all__ = ["PROTOCOLS", "method_name", "resolve_eval_config", "run_eval"]

PROTOCOLS = ("paper", "unified")


# -- configuration ----------------------------------------------------------------------------
def method_name(config: str) -> str:
    """``naclip`` for ``naclip``, ``seg/naclip_vitb16`` or ``.../naclip_vitb16.py``."""
    stem = Path(str(config)).stem
    for alias in ALIASES:
        if stem == alias or stem.startswith(alias + "_"):
            return alias
    return stem


def resolve_eval_config(
    config: str, dataset: str, protocol: str = "paper", overrides: Sequence[str] = ()
) -> DictConfig:
    """The resolved config: ``model`` (segmentor), ``class_rule`` and ``dataset``.

    ``paper``: ``configs/eval/<method>.py`` when it exists (else the preset as is), with its
    per-benchmark changes; ``unified``: the preset's strategy under ``configs/eval/unified.py``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    method = method_name(config)
    eval_file = CONFIGS_DIR / "eval" / f"{method}.py"
    is_preset = method in ALIASES and (
        get_config_file(config).resolve() == get_config_file(method).resolve()
    )
    if protocol == "paper" and is_preset and eval_file.is_file():
        cfg = LazyConfig.load(eval_file)
    else:
        cfg = LazyConfig.load(get_config_file(config))
        cfg.setdefault("class_rule", "unified")
        cfg.setdefault("benchmarks", {})
    if protocol == "unified":
        unified = LazyConfig.load(CONFIGS_DIR / "eval" / "unified.py")
        for key, value in unified.protocol.items():
            cfg.model[key] = value
        cfg.class_rule = unified.class_rule
        cfg.benchmarks = unified.benchmarks
    for key, value in (cfg.benchmarks.get(dataset) or {}).items():
        cfg.model[key] = value
    cfg.dataset = dataset
    cfg.protocol = protocol
    cfg.method = method
    del cfg["benchmarks"]
    return LazyConfig.apply_overrides(cfg, list(overrides))


def versions() -> dict[str, str]:
    import open_clip

    return {
        "ovdense": __version__,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": sys.version.split()[0],
    }


# -- distributed ------------------------------------------------------------------------------
def init_distributed(device: str | None) -> tuple[int, int, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(f"cuda:{local}") if device == "cuda" else torch.device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


# -- evaluation -------------------------------------------------------------------------------
def _atomic_save_label(labels: np.ndarray, path: Path) -> None:
    with atomic_write(path, suffix=".png") as tmp:
        save_label_png(labels, tmp)


def _pred_path(pred_dir: Path, sample_id: str) -> Path:
    return pred_dir / (sample_id.replace("/", "__") + ".png")


def markdown_table(metrics: dict, title: str) -> str:
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    for key in ("mIoU", "fwIoU", "mAcc", "pAcc"):
        lines.append(f"| {key} | {format_metric(metrics[key])} |")
    lines += ["", "| class | IoU | Acc |", "|---|---|---|"]
    for name, iou in metrics["IoU"].items():
        lines.append(
            f"| {name} | {format_metric(iou)} | {format_metric(metrics['Acc'].get(name))} |"
        )
    return "\n".join(lines) + "\n"


def run_eval(
    config: str,
    dataset: str,
    *,
    protocol: str = "paper",
    data_root: str | None = None,
    output: str | os.PathLike | None = None,
    limit: int | None = None,
    device: str | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    checkpoint: str | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> dict:
    """Evaluate one method on one dataset; returns the results dict (also written to disk)."""
    if dataset.startswith("folder:"):
        dataset = parse_dataset_spec(dataset)
    meta = get_metadata(dataset)
    clip_overrides = []
    if model:
        clip_overrides.append(f"model.clip.model_name={model}")
    if checkpoint:
        clip_overrides += ["model.clip.pretrained=None", f"model.clip.checkpoint={checkpoint}"]
    elif pretrained:
        clip_overrides.append(f"model.clip.pretrained={pretrained}")
    cfg = resolve_eval_config(config, dataset, protocol, [*clip_overrides, *overrides])
    cfg.model.background_index = meta.background_index if meta.background_index is not None else 0
    rank, world, dev = init_distributed(device)
    out_dir = Path(output or Path("output") / "eval" / f"{cfg.method}_{protocol}" / dataset)
    pred_dir = out_dir / "preds"
    if rank == 0:
        pred_dir.mkdir(parents=True, exist_ok=True)
        LazyConfig.save(cfg, out_dir / "config.yaml")
    barrier(world)

    data: SemSegDataset = build_semseg_dataset(dataset, data_root, limit=limit)
    vocab = meta.vocabulary(cfg.class_rule)
    seg = instantiate(cfg.model).to(dev)
    text = seg.encode_text(vocab)
    evaluator = SemSegEvaluator(
        meta.num_classes,
        meta.ignore_label,
        vocab.display_names,
        class_groups=dict(meta.class_groups or ()),
    )
    indices = list(range(rank, len(data), world))
    skipped: list[str] = []
    resumed = 0
    bar = tqdm(indices, desc=f"{cfg.method}/{dataset}", unit="img", disable=not progress or rank)
    for i in bar:
        try:
            item = data[i]
        except DatasetFileError as err:
            skipped.append(str(err))
            tqdm.write(f"skipped: {err}")
            continue
        path = _pred_path(pred_dir, item["id"])
        pred = None
        if path.is_file():
            try:
                pred = load_label_png(path).astype(np.int64)
                resumed += 1
            except (ValueError, OSError):
                pred = None  # a damaged prediction is recomputed
        if pred is None or pred.shape != item["label"].shape:
            image = torch.from_numpy(np.array(item["image"])).permute(2, 0, 1)[None].float()
            out = seg.decode(seg.encode_image(image / 255.0), text, return_probs=False)
            pred = out.labels[0].cpu().numpy()
            _atomic_save_label(pred, path)
        evaluator.process(pred, item["label"])
    # every rank reports its skipped files
    if world > 1:
        gathered: list[list[str]] = [[] for _ in range(world)]
        dist.all_gather_object(gathered, skipped)
        skipped = [s for part in gathered for s in part]
    metrics = evaluator.evaluate()["sem_seg"]
    results = {
        "method": cfg.method,
        "protocol": protocol,
        "dataset": dataset,
        "num_images": len(data) - len(skipped),
        "resumed_images": resumed,
        "skipped": skipped,
        "metrics": metrics,
        "versions": versions(),
        "config": str(out_dir / "config.yaml"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if rank == 0:
        atomic_write_text(
            out_dir / "results.json",
            json.dumps(json_safe(results), indent=2, ensure_ascii=False),
        )
        title = f"{cfg.method} ({protocol} protocol) on {dataset}: mIoU {metrics['mIoU']:.2f}"
        (out_dir / "results.md").write_text(markdown_table(metrics, title))
    return results
