#!/usr/bin/env python
"""Train a model described by a lazy config (see :mod:`ovdense.engine.trainer`).

Examples::

    python tools/train.py --config configs/my_train.py train.max_iter=200
    python tools/train.py --config configs/my_train.py --output output/run1 --resume
    python tools/train.py --config configs/my_train.py --output output/run1 --overwrite
    torchrun --nproc-per-node 2 tools/train.py --config configs/my_train.py

Outputs (in ``train.output_dir`` / ``--output``): ``config.yaml`` (the resolved config),
``metrics.jsonl``, ``model_{iter:07d}.pt`` checkpoints and ``last_checkpoint``. A folder that
already holds a run needs ``--resume`` (continue it) or ``--overwrite`` (start again). Ctrl-C
saves a checkpoint of the last completed iteration; ``--resume`` continues from it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import torch.distributed as dist

from ovdense.engine import Trainer, init_distributed, load_train_config
from ovdense.utils.cli import run_cli

INTERRUPT_HINT = "a checkpoint was saved; run the same command with --resume to continue"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="lazy config file (.py or .yaml)")
    run = p.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue from OUTPUT/last_checkpoint")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in an output folder that holds a run (deletes its model_*.pt, "
        "last_checkpoint, metrics.jsonl and config.yaml)",
    )
    p.add_argument("--output", default=None, help="output folder (sets train.output_dir)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (sets train.device)")
    p.add_argument("opts", nargs="*", default=[], help="config overrides: key.path=value")
    return p.parse_intermixed_args(argv)  # key=value overrides anywhere


def main(argv: Sequence[str] | None = None) -> int:
    """Run training; user errors are raised (``run_cli`` shows them as one line)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        info = init_distributed()
        if not info.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        cfg = load_train_config(args.config, args.opts, args.output, device=args.device)
        trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
        trainer.train()
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupt_hint=INTERRUPT_HINT))
