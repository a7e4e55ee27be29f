#!/usr/bin/env python
"""Train a model described by a lazy config (see :mod:`ovdense.engine.trainer`).

Examples::

    python tools/train.py --config configs/my_train.py train.max_iter=200
    python tools/train.py --config configs/my_train.py --output output/run1 --resume
    torchrun --nproc-per-node 2 tools/train.py --config configs/my_train.py

Outputs (in ``train.output_dir`` / ``--output``): ``config.yaml`` (the resolved config),
``metrics.jsonl``, ``model_{iter:07d}.pt`` checkpoints and ``last_checkpoint``.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch.distributed as dist

from ovdense.engine import Trainer, init_distributed, load_train_config
from ovdense.utils.cli import USER_ERRORS, report_user_error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="lazy config file (.py or .yaml)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last_checkpoint")
    p.add_argument("--output", default=None, help="output folder (sets train.output_dir)")
    p.add_argument("opts", nargs="*", default=[], help="config overrides: key.path=value")
    return p.parse_intermixed_args(argv)  # key=value overrides anywhere


def main(argv: list[str] | None = None) -> int:
    """Run training; returns the exit code (2 with a one-line message for user errors)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        info = init_distributed()
        if not info.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        cfg = load_train_config(args.config, args.opts, args.output)
        trainer = Trainer(cfg, resume=args.resume)
        trainer.train()
    except USER_ERRORS as err:
        return report_user_error(err)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
