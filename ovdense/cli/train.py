"""Train a model described by a lazy config (see :mod:`ovdense.engine.trainer`).

Examples::

    ovdense train --config configs/my_train.py train.max_iter=200
    ovdense train --config configs/my_train.py --output output/run1 --resume
    ovdense train --config configs/my_train.py --output output/run1 --overwrite
    torchrun --nproc-per-node 2 -m ovdense train --config configs/my_train.py

(``python tools/train.py ...`` runs the same code, also under ``torchrun``.)

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

from ..engine import Trainer, load_train_config
from ..engine.distributed import init_distributed, shutdown_distributed
from ..utils.cli import add_device_argument, add_output_argument, add_overrides_argument, run_cli

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
    add_output_argument(p, "output folder (sets train.output_dir)")
    add_device_argument(p, "cpu, cuda, cuda:N (sets train.device)")
    add_overrides_argument(p, "config overrides: key.path=value")
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
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupt_hint=INTERRUPT_HINT))
