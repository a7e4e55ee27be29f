"""Train and evaluate an ovdense LazyConfig with detectron2's own trainer.

detectron2's ``tools/lazyconfig_train_net.py`` is not part of its package; this module is the
same loop for ovdense's configs (``tools/d2_train.py`` wraps :func:`main`):
``SimpleTrainer`` (``AMPTrainer`` with ``train.amp.enabled``), detectron2's hooks (iteration
timer, LR scheduler, periodic checkpointer, evaluation, metric writers), its checkpointer and
``inference_on_dataset``. Beyond detectron2's keys, a config may have:

- ``train.clip_grad``: clip the gradients' global norm to this value (F-ViT: 1.0);
- ``test_vocabulary``: ``dict(class_embeds=..., is_base=[...])``, the vocabulary the box
  predictor detects during evaluation (instantiated once; the training vocabulary is the
  predictor's ``class_embeds``).

Usage::

    python tools/d2_train.py --config-file fvit_shapes
    python tools/d2_train.py --config-file fvit_vitb16_ovcoco --num-gpus 8
    python tools/d2_train.py --config-file fvit_shapes --eval-only train.init_checkpoint=...
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
    launch,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from torch import nn

from .roi_heads import TextFastRCNNOutputLayers

__all__ = [
    "CONFIGS",
    "CONFIGS_DIR",
    "config_path",
    "do_test",
    "do_train",
    "load_config",
    "main",
    "test_vocabulary",
    "with_grad_clipping",
]

logger = logging.getLogger("ovdense.integrations.detectron2")

#: detectron2 LazyConfigs shipped with the adapter.
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"

#: Their names (``<name>.py`` under :data:`CONFIGS_DIR`).
CONFIGS = ("fvit_shapes", "fvit_vitb16_ovcoco")


def config_path(config: str | os.PathLike) -> Path:
    """A config file: an existing path, or the name of a shipped config (:data:`CONFIGS`)."""
    path = Path(config)
    if path.is_file():
        return path
    shipped = CONFIGS_DIR / f"{Path(str(config)).stem}.py"
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"No config file {str(config)!r} and no shipped detectron2 config of that name "
        f"(shipped: {', '.join(CONFIGS)})."
    )


def load_config(config: str | os.PathLike, overrides: Sequence[str] = ()) -> Any:
    """detectron2's ``LazyConfig.load`` of :func:`config_path` with ``key=value`` overrides."""
    cfg = LazyConfig.load(str(config_path(config)))
    return LazyConfig.apply_overrides(cfg, list(overrides))


def with_grad_clipping(optimizer: torch.optim.Optimizer, max_norm: float) -> torch.optim.Optimizer:
    """Clip the global gradient norm of ``optimizer``'s parameters to ``max_norm`` before each
    step (also under ``AMPTrainer``: its scaler unscales the gradients before calling
    ``step``). Returns the same optimizer, its class swapped for a clipping subclass (as
    detectron2's own ``maybe_add_gradient_clipping`` does)."""
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}.")
    base = type(optimizer)

    def step(self: torch.optim.Optimizer, closure: Any = None) -> Any:
        params = [p for group in self.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return base.step(self, closure)

    optimizer.__class__ = type(base.__name__ + "WithGradClip", (base,), {"step": step})
    return optimizer


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _vocabulary(model: nn.Module, vocab: Mapping[str, Any] | None) -> Any:
    """A context in which the box predictor detects ``vocab`` (``nullcontext`` without one)."""
    if not vocab:
        return nullcontext()
    roi_heads = getattr(_unwrap(model), "roi_heads", None)
    predictor = getattr(roi_heads, "box_predictor", None)
    if not isinstance(predictor, TextFastRCNNOutputLayers):
        raise TypeError("test_vocabulary needs a model with a TextFastRCNNOutputLayers predictor.")
    return predictor.vocabulary(vocab["class_embeds"], vocab.get("is_base"))


def test_vocabulary(cfg: Any) -> dict[str, Any] | None:
    """``cfg.test_vocabulary`` instantiated (``{"class_embeds": [K, D], "is_base": [K]}``), or
    ``None`` when the config has none."""
    if "test_vocabulary" not in cfg:
        return None
    return {k: instantiate(v) for k, v in cfg.test_vocabulary.items()}


def do_test(cfg: Any, model: nn.Module, vocab: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``inference_on_dataset`` of ``cfg.dataloader.test`` with ``cfg.dataloader.evaluator``
    (nothing without an evaluator), detecting ``vocab`` (default ``cfg.test_vocabulary``)."""
    if "evaluator" not in cfg.dataloader:
        return {}
    if vocab is None:
        vocab = test_vocabulary(cfg)
    with _vocabulary(model, vocab):
        ret = inference_on_dataset(
            model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
        )
    print_csv_format(ret)
    return ret


def do_train(cfg: Any, resume: bool = False) -> SimpleTrainer:
    """Train ``cfg.model`` on ``cfg.dataloader.train`` for ``cfg.train.max_iter`` iterations
    with detectron2's trainer and hooks; returns the trainer (its ``storage`` holds the
    metric history, e.g. ``trainer.storage.history("total_loss")``)."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    logger.info("Model:\n%s", model)
    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    clip = cfg.train.get("clip_grad", None)
    if clip:
        optim = with_grad_clipping(optim, float(clip))
    train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **cfg.train.ddp)
    amp = bool(cfg.train.get("amp", {}).get("enabled", False))
    trainer = (AMPTrainer if amp else SimpleTrainer)(model, train_loader, optim)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    vocab = test_vocabulary(cfg)
    eval_period = int(cfg.train.get("eval_period", 0) or 0)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            (
                hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
                if comm.is_main_process()
                else None
            ),
            (
                hooks.EvalHook(eval_period, lambda: do_test(cfg, model, vocab))
                if eval_period > 0
                else None
            ),
            (
                hooks.PeriodicWriter(
                    default_writers(cfg.train.output_dir, cfg.train.max_iter),
                    period=cfg.train.log_period,
                )
                if comm.is_main_process()
                else None
            ),
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)
    return trainer


def _worker(args: Any) -> dict[str, Any] | None:
    args.config_file = str(config_path(args.config_file))  # default_setup logs the file
    cfg = load_config(args.config_file, args.opts)
    default_setup(cfg, args)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = create_ddp_model(model)
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    do_train(cfg, args.resume)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """detectron2's command line (``--config-file NAME_OR_PATH``, ``--resume``,
    ``--eval-only``, ``--num-gpus``, ``key=value`` overrides)."""
    args = default_argument_parser(epilog=__doc__).parse_args(argv)
    launch(
        _worker,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0
