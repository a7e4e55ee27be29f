"""The one training loop of ovdense, built from a lazy config.

Config keys (see :data:`TRAIN_DEFAULTS` for ``train``)::

    model = L(MyModel)(...)            # forward(batch) -> dict of scalar losses (summed)
    dataloader = dict(                 # or L(torch.utils.data.DataLoader)(...), see below
        dataset=L(MyDataset)(...), batch_size=8, num_workers=2, shuffle=True, drop_last=True,
    )
    optimizer = L(torch.optim.AdamW)(lr=1e-4, weight_decay=0.05)   # ``params`` is filled in
                                       # (a model's ``param_groups()`` list of dicts, if any)
    lr_scheduler = L(WarmupCosine)(max_iter=1000, warmup_iters=50)  # or None: constant lr
    train = dict(max_iter=1000, grad_accum=1, amp=False, output_dir="output/run", ...)

With the ``dict`` form of ``dataloader`` the trainer owns the sampler (a
:class:`~torch.utils.data.DistributedSampler`, also for a world of one) and the order of the
data is a function of ``(train.seed, epoch)``: ``resume`` restores the epoch and skips the
batches already consumed in it, so a resumed run continues bit for bit (on CPU). A lazy
``DataLoader`` is used as is; resume then replays its batches to skip them, which is exact
only when its order does not depend on the global RNG.

Iterations count optimizer steps; each consumes ``grad_accum`` batches per process, so the
effective batch is ``batch_size * grad_accum * world_size``.

The output folder belongs to one run: training into a folder that already holds one
(``last_checkpoint``, ``model_*.pt`` or ``metrics.jsonl``) needs ``resume=True`` (continue it)
or ``overwrite=True`` (delete what the trainer wrote there and start again). Every file is
written atomically (``metrics.jsonl`` is appended one whole line at a time and, on resume,
trimmed to the checkpoint's iteration), temporaries left by killed runs are removed at start,
and Ctrl-C saves a checkpoint of the last completed iteration before the
``KeyboardInterrupt`` goes on.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import random
import re
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sized
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from ..config import LazyConfig, instantiate
from ..config.lazy import TARGET_KEY, bad_argument_types, locate
from ..utils.cli import UserError, resolve_device
from ..utils.io import atomic_write_text, remove_stale_temporaries
from ..utils.registry import closest_match
from .checkpoint import (
    LAST_CHECKPOINT,
    get_rng_state,
    load_checkpoint,
    read_last_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from .distributed import DistInfo, init_distributed
from .schedules import build_lr_scheduler

__all__ = [
    "TRAIN_DEFAULTS",
    "DATALOADER_DEFAULTS",
    "Trainer",
    "check_train_config",
    "load_train_config",
    "merge_train_defaults",
]

logger = logging.getLogger(__name__)

#: Options under ``train`` and their defaults.
TRAIN_DEFAULTS: dict[str, Any] = {
    "max_iter": 1000,  # optimizer steps
    "grad_accum": 1,  # batches per optimizer step (loss divided by it)
    "amp": False,  # False | True (fp16 on CUDA, bf16 on CPU) | "fp16" | "bf16"
    "clip_grad": None,  # max global gradient norm, None: no clipping
    "log_period": 20,  # iterations between metrics.jsonl lines
    "checkpoint_period": 500,  # iterations between checkpoints (0: only the final one)
    "eval_period": 0,  # iterations between eval_hook calls (0: only at the end, if any)
    "eval_hook": None,  # dotted path of hook(model, iteration) -> dict | None, or a lazy call
    "output_dir": "output/train",
    "seed": 0,  # None: a random seed (shared by all ranks)
    "device": None,  # None: "cuda" when available, else "cpu"
}

#: Keys of the ``dict`` form of ``dataloader`` and their defaults (``dataset`` is required).
DATALOADER_DEFAULTS: dict[str, Any] = {
    "dataset": None,
    "batch_size": 8,  # per process
    "num_workers": 0,
    "shuffle": True,
    "drop_last": True,
    "collate_fn": None,
    "pin_memory": False,
}

_AMP_VALUES = (False, True, "fp16", "bf16")

#: Files the trainer writes in its output folder (what ``overwrite=True`` removes).
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
_CHECKPOINT_RE = re.compile(r"model_\d+\.pt")


def _unknown_keys(section: str, given: Mapping[str, Any], valid: Mapping[str, Any]) -> None:
    for key in given:
        if key not in valid:
            hint = closest_match(str(key), list(valid))
            msg = f"Unknown config key '{section}.{key}'."
            if hint is not None:
                msg += f" Did you mean '{section}.{hint}'?"
            msg += f" Valid keys under '{section}': {', '.join(sorted(valid))}."
            raise KeyError(msg)


def load_train_config(
    path: str | os.PathLike,
    overrides: list[str] | tuple[str, ...] = (),
    output: str | None = None,
    device: str | None = None,
) -> DictConfig:
    """A training config file with the ``train`` defaults filled in, ``key=value`` overrides
    applied, ``train.output_dir`` / ``train.device`` set to ``output`` / ``device`` when given
    and the values checked (:func:`check_train_config`; what ``tools/train.py`` runs).

    Raises:
        KeyError: An unknown key (the nearest valid one is named).
        ValueError: An invalid value (one sentence naming the key).
    """
    cfg = LazyConfig.load(str(path))
    merge_train_defaults(cfg)
    LazyConfig.apply_overrides(cfg, list(overrides))
    if output is not None:
        cfg.train.output_dir = output
    if device is not None:
        cfg.train.device = device
    check_train_config(cfg)
    return cfg


def _integer(section: str, key: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, else a ValueError naming ``section.key``."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and value.is_integer():
        ok, value = True, int(value)
    if not ok or value < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        raise ValueError(f"{section}.{key}: expected {kind}, got {value!r}.")
    return int(value)


def _flag(section: str, key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{section}.{key}: expected True or False, got {value!r}.")


def check_train_config(cfg: DictConfig) -> DictConfig:
    """Check the values of the ``train`` options (and of a ``dict`` dataloader and the
    optimizer's plain arguments) before anything is built.

    Each problem is one sentence naming the key, the expected value and the given one, e.g.
    ``"train.max_iter: expected a positive integer, got 'abc'."``. ``train.device`` is checked
    with :func:`ovdense.utils.cli.resolve_device` (``cuda`` without a GPU is refused).

    Returns:
        ``cfg`` (unchanged).

    Raises:
        ValueError: The first invalid value.
        KeyError: An unknown key under ``train``/``dataloader``.
    """
    merge_train_defaults(cfg)
    t = cfg.train
    _integer("train", "max_iter", t.max_iter, 1)
    _integer("train", "grad_accum", t.grad_accum, 1)
    for key in ("log_period", "checkpoint_period", "eval_period"):
        _integer("train", key, t[key], 0)
    clip = t.clip_grad
    if clip is not None and (
        isinstance(clip, bool) or not isinstance(clip, int | float) or not clip > 0
    ):
        raise ValueError(f"train.clip_grad: expected a positive number or None, got {clip!r}.")
    if not any(t.amp is v if isinstance(v, bool) else t.amp == v for v in _AMP_VALUES):
        raise ValueError(
            f"train.amp: expected one of {', '.join(map(repr, _AMP_VALUES))}, got {t.amp!r}."
        )
    if t.seed is not None:
        _integer("train", "seed", t.seed, 0)
    if not isinstance(t.output_dir, str | os.PathLike) or not str(t.output_dir).strip():
        raise ValueError(f"train.output_dir: expected a folder path, got {t.output_dir!r}.")
    if t.device is not None and not isinstance(t.device, str):
        raise ValueError(f"train.device: expected 'cpu', 'cuda' or 'cuda:N', got {t.device!r}.")
    resolve_device(t.device)
    loader = cfg.get("dataloader")
    if isinstance(loader, Mapping | DictConfig) and TARGET_KEY not in loader:
        node: Any = loader  # a config node: keys read as attributes
        _integer("dataloader", "batch_size", node.batch_size, 1)
        _integer("dataloader", "num_workers", node.num_workers, 0)
        for key in ("shuffle", "drop_last", "pin_memory"):
            _flag("dataloader", key, loader[key])
    opt = cfg.get("optimizer")
    if isinstance(opt, Mapping | DictConfig) and TARGET_KEY in opt:
        target = opt[TARGET_KEY]
        try:
            target = locate(target) if isinstance(target, str) else target
        except ImportError:
            target = None  # reported when the optimizer is built
        if target is not None:
            plain = {str(k): v for k, v in opt.items() if k != TARGET_KEY}
            bad = bad_argument_types(target, plain, "optimizer")
            if bad:
                raise ValueError(bad[0] + ".")
    return cfg


def merge_train_defaults(cfg: DictConfig) -> DictConfig:
    """Fill in the defaults of ``cfg.train`` (and of a ``dict`` dataloader), in place.

    After this every option is in the config, so it can be overridden from the command line
    and is written to ``config.yaml``.

    Raises:
        KeyError: For an unknown key under ``train`` or ``dataloader`` (closest key suggested).
    """
    with open_dict(cfg):
        train = cfg.get("train") or {}
        _unknown_keys("train", train, TRAIN_DEFAULTS)
        merged = dict(TRAIN_DEFAULTS)
        # a DictConfig mapping converts to a dict
        merged.update(
            cast(dict, OmegaConf.to_container(train)) if isinstance(train, DictConfig) else train
        )
        cfg.train = merged
        loader = cfg.get("dataloader")
        if isinstance(loader, Mapping | DictConfig) and TARGET_KEY not in loader:
            _unknown_keys("dataloader", loader, DATALOADER_DEFAULTS)
            node: Any = loader  # a config node (DictConfig), mutable under open_dict
            for key, value in DATALOADER_DEFAULTS.items():
                if key not in node:
                    node[key] = value
    return cfg


class _ResumableSampler(DistributedSampler):
    """A DistributedSampler whose epoch can be entered part-way (``skip`` samples dropped)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block ends, then raise ``KeyboardInterrupt``.

    Only in the main thread and while Python's default handler is installed; elsewhere the
    block runs as is (an interrupt then lands wherever it lands).
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    pending: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pending:
        raise KeyboardInterrupt


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Train ``cfg.model`` with ``cfg.optimizer`` on ``cfg.dataloader`` (see the module doc).

    Builds everything at construction: joins the torchrun process group (if any), seeds, builds
    the model (wrapped in DistributedDataParallel when the world is larger than one), the data,
    the optimizer and the schedule, saves ``output_dir/config.yaml`` (rank 0) and, with
    ``resume``, loads ``output_dir/last_checkpoint`` (starting from scratch when there is none)
    and trims ``metrics.jsonl`` to its iteration. Option values are checked first
    (:func:`check_train_config`), before anything is built.

    Args:
        cfg: The lazy config; ``train`` defaults are filled in (in place).
        resume: Continue from the newest checkpoint in ``train.output_dir``.
        overwrite: Start afresh in an output folder that holds a run: its ``model_*.pt``,
            ``last_checkpoint``, ``metrics.jsonl`` and ``config.yaml`` are deleted (nothing
            else). Without ``resume`` or ``overwrite`` such a folder is refused.
        eval_hook: ``hook(model, iteration) -> dict | None`` called on all ranks every
            ``train.eval_period`` iterations and at the end, with the unwrapped model in eval
            mode; a returned dict is added to ``metrics.jsonl``. Overrides ``train.eval_hook``.

    Raises:
        KeyError: For unknown ``train``/``dataloader`` keys.
        ValueError: For invalid option values, or an output folder that holds a run (without
            ``resume``/``overwrite``).
        UserError: For a device that is not there (``cuda`` without a GPU).
        CheckpointError: When resuming from an unreadable checkpoint.
    """

    def __init__(
        self,
        cfg: DictConfig,
        *,
        resume: bool = False,
        overwrite: bool = False,
        eval_hook: Callable[[nn.Module, int], Mapping[str, Any] | None] | None = None,
    ) -> None:
        if resume and overwrite:
            raise ValueError(
                "resume and overwrite exclude each other: --resume continues the run in the "
                "output folder, --overwrite deletes it and starts again."
            )
        self.cfg = check_train_config(cfg)
        opts = self.cfg.train
        self.max_iter = int(opts.max_iter)
        self.grad_accum = int(opts.grad_accum)
        self.log_period = int(opts.log_period)
        self.checkpoint_period = int(opts.checkpoint_period)
        self.eval_period = int(opts.eval_period)
        self.clip_grad = None if opts.clip_grad is None else float(opts.clip_grad)
        self.output_dir = Path(str(opts.output_dir))

        self.dist: DistInfo = init_distributed()
        device = resolve_device(opts.device)
        if device == "cuda" and self.dist.world_size > 1:
            device = f"cuda:{self.dist.local_rank}"
        self.device = torch.device(device)
        if not resume:
            self._refuse_existing_run(overwrite)
        self.seed = self._shared_seed(opts.seed)
        _seed_everything(self.seed + self.dist.rank)

        # Model (all ranks start from rank 0's weights: DDP broadcasts them).
        self.model: nn.Module = instantiate(self.cfg.model)
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"cfg.model must build an nn.Module, got {type(self.model).__name__}.")
        self.model.to(self.device).train()
        self.ddp_model: nn.Module = self.model
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=ids)

        self._build_data()
        self.optimizer = self._build_optimizer()
        sched_cfg = self.cfg.get("lr_scheduler")
        schedule = instantiate(sched_cfg) if sched_cfg is not None else (lambda _: 1.0)
        self.scheduler = build_lr_scheduler(self.optimizer, schedule)

        self.amp_dtype = self._amp_dtype(opts.amp)
        use_scaler = self.amp_dtype == torch.float16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)

        self.eval_hook = eval_hook if eval_hook is not None else self._build_hook(opts.eval_hook)
        self.iter = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self._restored_rng: dict[str, Any] | None = None
        self._saved_iter: int | None = None  # iteration of the newest checkpoint written
        self._phase: str | None = None  # where train() is inside a step (for Ctrl-C)
        self._running_stats = [
            m
            for m in self.model.modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
        ]

        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            for stale in remove_stale_temporaries(self.output_dir):
                logger.info("Removed %s, left behind by a killed run.", stale)
            if overwrite and not resume:
                self._remove_run_files()
            self._save_config()
        if self.dist.world_size > 1:
            dist.barrier()
        if resume:
            self.resume()

    # ----------------------------------------------------------------------------------------
    # Building
    # ----------------------------------------------------------------------------------------

    def _run_files(self) -> list[Path]:
        """The files of a run the trainer wrote in ``output_dir`` (empty for a new folder)."""
        if not self.output_dir.is_dir():
            return []
        names = (LAST_CHECKPOINT, METRICS_FILE, CONFIG_FILE)
        return sorted(
            p
            for p in self.output_dir.iterdir()
            if p.is_file() and (p.name in names or _CHECKPOINT_RE.fullmatch(p.name))
        )

    def _refuse_existing_run(self, overwrite: bool) -> None:
        """Refuse an output folder holding a run unless ``overwrite`` (decided on rank 0)."""
        message: list[str | None] = [None]
        if self.dist.is_main and not overwrite:
            held = [p.name for p in self._run_files() if p.name != CONFIG_FILE]
            if held:
                shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
                message[0] = (
                    f"{self.output_dir} already holds a training run ({shown}); pass --resume "
                    "(resume=True) to continue it, or --overwrite (overwrite=True) to delete "
                    "its checkpoints, last_checkpoint, metrics.jsonl and config.yaml and "
                    "start again."
                )
        if self.dist.world_size > 1:
            dist.broadcast_object_list(message, src=0)
        if message[0] is not None:
            raise UserError(message[0])

    def _remove_run_files(self) -> None:
        for path in self._run_files():
            path.unlink()
            logger.info("Removed %s (overwrite).", path)

    def _save_config(self) -> None:
        """Write ``config.yaml`` atomically (a warning when the config cannot be YAML)."""
        try:
            LazyConfig.save(self.cfg, self.output_dir / CONFIG_FILE)  # atomic
        except ValueError as e:
            logger.warning("config.yaml not written: %s", e)

    def _shared_seed(self, seed: int | None) -> int:
        if seed is not None:
            return int(seed)
        value = [int.from_bytes(os.urandom(4), "little") % 2**31]
        if self.dist.world_size > 1:
            dist.broadcast_object_list(value, src=0)
        return value[0]

    def _amp_dtype(self, amp: bool | str) -> torch.dtype | None:
        if amp is False:
            return None
        if amp == "fp16" or (amp is True and self.device.type == "cuda"):
            if self.device.type != "cuda":
                raise ValueError("train.amp='fp16' needs CUDA; use amp='bf16' on CPU.")
            return torch.float16
        return torch.bfloat16

    def _build_hook(self, hook: Any) -> Callable[..., Any] | None:
        if hook is None:
            return None
        built = locate(hook) if isinstance(hook, str) else instantiate(hook)
        if not callable(built):
            raise TypeError(f"train.eval_hook must give a callable, got {type(built).__name__}.")
        return built

    def _build_data(self) -> None:
        loader_cfg = self.cfg.get("dataloader")
        if loader_cfg is None:
            raise KeyError(
                "The config has no 'dataloader'; add dataloader = dict(dataset=L(...)(...), "
                "batch_size=8) (or a lazy DataLoader)."
            )
        self.sampler: _ResumableSampler | None = None
        self.batch_size: int | None = None
        if TARGET_KEY in loader_cfg:
            self.loader = instantiate(loader_cfg)
            self.batch_size = getattr(self.loader, "batch_size", None)
            self._generator: torch.Generator | None = None
            return
        if loader_cfg.dataset is None:
            raise KeyError(
                "dataloader.dataset is required: dataloader.dataset = L(MyDataset)(...)."
            )
        dataset: Dataset = instantiate(loader_cfg.dataset)
        collate = loader_cfg.collate_fn
        if isinstance(collate, str):
            collate = locate(collate)
        elif collate is not None:
            collate = instantiate(collate)
        self.batch_size = int(loader_cfg.batch_size)
        self.sampler = _ResumableSampler(
            dataset,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=bool(loader_cfg.shuffle),
            seed=self.seed,
            drop_last=bool(loader_cfg.drop_last),
        )
        # A private generator: creating an iterator must not consume the global RNG (that
        # would make a resumed run's randomness differ), and workers are seeded per epoch.
        self._generator = torch.Generator()
        self.loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=int(loader_cfg.num_workers),
            collate_fn=collate,
            pin_memory=bool(loader_cfg.pin_memory),
            drop_last=bool(loader_cfg.drop_last),
            generator=self._generator,
        )
        if len(self.loader) == 0:
            raise ValueError(
                f"The dataset has {len(cast(Sized, dataset))} samples: fewer than one batch of "
                f"{self.batch_size} x {self.dist.world_size} processes; lower "
                "dataloader.batch_size or set dataloader.drop_last=False."
            )

    def _build_optimizer(self) -> torch.optim.Optimizer:
        opt_cfg = self.cfg.get("optimizer")
        if opt_cfg is None or TARGET_KEY not in opt_cfg:
            raise KeyError(
                "The config needs 'optimizer' as a lazy call, e.g. "
                "optimizer = L(torch.optim.AdamW)(lr=1e-4); its 'params' are filled in."
            )
        target = opt_cfg[TARGET_KEY]
        target = locate(target) if isinstance(target, str) else target
        kwargs = {
            str(k): instantiate(v) for k, v in opt_cfg.items() if k not in (TARGET_KEY, "params")
        }
        groups = getattr(self.model, "param_groups", None)
        if callable(groups):
            # per-group options (e.g. learning rates) chosen by the model; the optimizer
            # config's values are the defaults of every group
            params: list[Any] = []
            covered: set[int] = set()
            for group in groups():
                trainable = [p for p in group["params"] if p.requires_grad]
                covered.update(id(p) for p in trainable)
                if trainable:
                    params.append({**group, "params": trainable})
            missed = [
                n
                for n, p in self.model.named_parameters()
                if p.requires_grad and id(p) not in covered
            ]
            if missed:
                raise ValueError(
                    f"{type(self.model).__name__}.param_groups() leaves trainable parameters out "
                    f"of every group ({', '.join(missed[:5])}{', ...' if len(missed) > 5 else ''})"
                    "; add them to a group or freeze them (requires_grad_(False))."
                )
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]
        try:
            return target(params, **kwargs)
        except (TypeError, ValueError) as e:
            bad = bad_argument_types(target, kwargs, "optimizer")
            name = getattr(target, "__qualname__", repr(target))
            reason = "; ".join(bad) + "." if bad else str(e) or type(e).__name__
            kind = TypeError if isinstance(e, TypeError) else ValueError
            raise kind(f"while building 'optimizer' ({name}): {reason}") from e

    # ----------------------------------------------------------------------------------------
    # Data position
    # ----------------------------------------------------------------------------------------

    def _epoch_iterator(self) -> Iterator[Any]:
        skip = self.batch_in_epoch
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
            self.sampler.skip = skip * int(self.batch_size or 1)
            assert self._generator is not None
            self._generator.manual_seed(self.seed * 100_003 + self.epoch)
            return iter(self.loader)
        sampler = getattr(self.loader, "sampler", None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        it = iter(self.loader)
        for _ in range(skip):  # replay to skip (see module doc)
            next(it)
        return it

    def _batches(self) -> Iterator[Any]:
        """Endless batches; keeps ``epoch``/``batch_in_epoch`` pointing at the next batch."""
        while True:
            yielded = False
            for batch in self._epoch_iterator():
                yielded = True
                self.batch_in_epoch += 1
                yield batch
            if not yielded and self.batch_in_epoch == 0:
                raise ValueError("The dataloader yields no batches; check the dataset.")
            self.epoch += 1
            self.batch_in_epoch = 0

    # ----------------------------------------------------------------------------------------
    # Checkpoints
    # ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run (see :func:`save_checkpoint`)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iter": self.iter,
            "rng": get_rng_state(),
            "data": {
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "seed": self.seed,
                "world_size": self.dist.world_size,
                "batch_size": self.batch_size,
            },
        }

    def save(self) -> Path | None:
        """Write a checkpoint of the current iteration (rank 0 only; others return None)."""
        path = None
        if self.dist.is_main:
            path = save_checkpoint(self.state_dict(), self.output_dir, self.iter)
            self._saved_iter = self.iter
        if self.dist.world_size > 1:
            dist.barrier()
        return path

    def resume(self) -> bool:
        """Load ``output_dir/last_checkpoint`` if there is one.

        Returns:
            True when a checkpoint was loaded, False when starting from scratch.
        """
        path = read_last_checkpoint(self.output_dir)
        if path is None:
            logger.info("No checkpoint in %s; starting from scratch.", self.output_dir)
            self._trim_metrics()
            return False
        self.load_state_dict(load_checkpoint(path))
        self._saved_iter = self.iter
        self._trim_metrics()
        logger.info("Resumed from %s at iteration %d.", path, self.iter)
        return True

    def _trim_metrics(self) -> None:
        """Drop the ``metrics.jsonl`` lines after the current iteration (and unreadable ones),
        atomically, so a resumed run's log has no lines of iterations it will redo."""
        path = self.output_dir / METRICS_FILE
        if self.dist.is_main and path.is_file():
            kept, dropped = [], 0
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    keep = isinstance(record, dict) and int(record.get("iter", 0)) <= self.iter
                except (ValueError, TypeError):
                    keep = False
                if keep:
                    kept.append(line + "\n")
                else:
                    dropped += 1
            if dropped:
                atomic_write_text(path, "".join(kept))
                logger.info(
                    "Dropped %d line(s) after iteration %d from %s.", dropped, self.iter, path
                )
        if self.dist.world_size > 1:
            dist.barrier()

    def load_state_dict(self, ckpt: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (RNG state restored when training starts)."""
        data = ckpt.get("data", {})
        if data.get("world_size", 1) != self.dist.world_size or (
            data.get("batch_size") != self.batch_size
        ):
            logger.warning(
                "Checkpoint was written with world size %s / batch %s, now %s / %s: the data "
                "order will not continue exactly.",
                data.get("world_size"),
                data.get("batch_size"),
                self.dist.world_size,
                self.batch_size,
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if "scheduler" in ckpt:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iter = int(ckpt["iter"])
        self.epoch = int(data.get("epoch", 0))
        self.batch_in_epoch = int(data.get("batch_in_epoch", 0))
        if "seed" in data and int(data["seed"]) != self.seed:
            self.seed = int(data["seed"])
            if self.sampler is not None:
                self.sampler.seed = self.seed
        self._restored_rng = ckpt.get("rng")

    # ----------------------------------------------------------------------------------------
    # Training
    # ----------------------------------------------------------------------------------------

    def _forward(self, batch: Any) -> dict[str, torch.Tensor]:
        ctx = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else nullcontext()
        )
        with ctx:
            losses = self.ddp_model(batch)
        if not isinstance(losses, Mapping) or not losses:
            raise TypeError(
                "model.forward(batch) must return a non-empty dict of scalar losses, got "
                f"{type(losses).__name__}."
            )
        return dict(losses)

    def run_step(self, batches: Iterator[Any]) -> dict[str, float]:
        """One optimizer step over ``grad_accum`` batches; returns the mean loss terms."""
        totals: dict[str, float] = defaultdict(float)
        for k in range(self.grad_accum):
            batch = _to_device(next(batches), self.device)
            sync = k == self.grad_accum - 1 or not isinstance(
                self.ddp_model, DistributedDataParallel
            )
            ddp = self.ddp_model
            # not sync: ddp is a DistributedDataParallel
            with (
                ddp.no_sync()
                if not sync and isinstance(ddp, DistributedDataParallel)
                else nullcontext()
            ):
                losses = self._forward(batch)
                # a non-empty mapping of tensors (checked by _forward)
                loss = cast(torch.Tensor, sum(losses.values()))
                self.scaler.scale(loss / self.grad_accum).backward()
            for name, value in losses.items():
                totals[name] += float(value.detach()) / self.grad_accum
            totals["loss"] += float(loss.detach()) / self.grad_accum
        # Weights, optimizer and schedule change from here on: Ctrl-C waits for the end of
        # the update (where a checkpoint is consistent) when the handler can be swapped.
        with _sigint_deferred():
            self._phase = "update"
            if self.clip_grad is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self._phase = "updated"
        return dict(totals)

    def _reduce(self, values: dict[str, float]) -> dict[str, float]:
        if self.dist.world_size == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.dist.world_size for k, v in zip(keys, t.tolist())}

    def _run_eval(self) -> dict[str, Any]:
        if self.eval_hook is None:
            return {}
        self.model.eval()
        try:
            with torch.no_grad():
                result = self.eval_hook(self.model, self.iter)
        finally:
            self.model.train()
        return dict(result or {})

    def _write_metrics(self, record: dict[str, Any]) -> None:
        """Append one line to ``metrics.jsonl`` in a single write; on a failed or short write
        (full disk) the file is cut back to its previous end, so it never ends mid-line."""
        if not self.dist.is_main:
            return
        data = (json.dumps(record) + "\n").encode("utf-8")
        path = self.output_dir / METRICS_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            except BaseException:
                os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)

    def _snapshot(self) -> dict[str, Any]:
        """What a step changes before the weights do: data position, RNG, running stats."""
        return {
            "iter": self.iter,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "rng": get_rng_state(),
            "stats": [
                {k: v.detach().clone() for k, v in m.state_dict().items()}
                for m in self._running_stats
            ],
        }

    def _save_interrupted(self, snapshot: dict[str, Any]) -> None:
        """On Ctrl-C: checkpoint the last completed iteration (rank 0, no barrier)."""
        phase, self._phase = self._phase, None
        if phase == "step":  # interrupted before the update: back to the step's start
            self.epoch = snapshot["epoch"]
            self.batch_in_epoch = snapshot["batch_in_epoch"]
            set_rng_state(snapshot["rng"])
            for module, stats in zip(self._running_stats, snapshot["stats"], strict=True):
                module.load_state_dict(stats)
        elif phase == "update":
            logger.warning(
                "Interrupted while the optimizer was updating the weights: no checkpoint of "
                "iteration %d saved; --resume continues from the previous one.",
                self.iter + 1,
            )
            return
        elif phase == "updated" and self.iter == snapshot["iter"]:
            self.iter += 1  # the step completed; only the count was missing
        if not self.dist.is_main or self._saved_iter == self.iter:
            return
        path = save_checkpoint(self.state_dict(), self.output_dir, self.iter)
        self._saved_iter = self.iter
        logger.warning("Interrupted: saved %s (iteration %d).", path, self.iter)

    def train(self) -> dict[str, float]:
        """Train from the current iteration to ``train.max_iter``.

        On Ctrl-C (``KeyboardInterrupt``) a checkpoint of the last completed iteration is
        written (rank 0) before the interrupt is re-raised; a step interrupted before its
        optimizer update is rewound (data position, RNG, normalisation statistics), so
        resuming from that checkpoint continues like an uninterrupted run.

        Returns:
            The loss terms of the last log period (averaged over it and over ranks).
        """
        if self._restored_rng is not None:
            set_rng_state(self._restored_rng)
            self._restored_rng = None
        batches = self._batches()
        bar = tqdm(
            total=self.max_iter,
            initial=self.iter,
            disable=not self.dist.is_main,
            dynamic_ncols=True,
            desc="train",
        )
        period: dict[str, float] = defaultdict(float)
        period_steps = 0
        period_start = time.perf_counter()
        last: dict[str, float] = {}
        images_per_step = (
            self.batch_size * self.grad_accum * self.dist.world_size if self.batch_size else None
        )
        snapshot: dict[str, Any] = {"iter": self.iter}
        try:
            while self.iter < self.max_iter:
                snapshot = self._snapshot()
                self._phase = "step"
                values = self.run_step(batches)
                self.iter += 1
                self._phase = None
                if not math.isfinite(values["loss"]):
                    raise FloatingPointError(
                        f"Loss is {values['loss']} at iteration {self.iter - 1}; lower the "
                        "learning rate, set train.clip_grad, or check the data."
                    )
                for k, v in values.items():
                    period[k] += v
                period_steps += 1
                bar.update(1)
                done = self.iter == self.max_iter
                if (self.log_period > 0 and self.iter % self.log_period == 0) or done:
                    elapsed = max(time.perf_counter() - period_start, 1e-9)
                    last = self._reduce({k: v / period_steps for k, v in period.items()})
                    record: dict[str, Any] = {"iter": self.iter, **last}
                    record["lr"] = self.optimizer.param_groups[0]["lr"]
                    record["it_per_s"] = period_steps / elapsed
                    postfix = {"loss": f"{last['loss']:.4g}", "lr": f"{record['lr']:.3g}"}
                    if images_per_step is not None:
                        record["images_per_s"] = record["it_per_s"] * images_per_step
                        postfix["img/s"] = f"{record['images_per_s']:.1f}"
                    bar.set_postfix(postfix)
                    self._write_metrics(record)
                    period, period_steps = defaultdict(float), 0
                    period_start = time.perf_counter()
                if (self.checkpoint_period > 0 and self.iter % self.checkpoint_period == 0) or (
                    done
                ):
                    self.save()
                if self.eval_hook is not None and (
                    (self.eval_period > 0 and self.iter % self.eval_period == 0) or done
                ):
                    result = self._run_eval()
                    if result:
                        self._write_metrics({"iter": self.iter, **result})
        except KeyboardInterrupt:
            self._save_interrupted(snapshot)
            raise
        finally:
            self._phase = None
            bar.close()
        return last
