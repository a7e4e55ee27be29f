"""Train the tiny CLIP of the shapes world, shipped as ``load_clip("ovdense-tiny-vit", "shapes")``.

Runs ``ovdense/configs/train/tiny_clip_shapes.py`` on the training engine (CPU by default,
about an hour on 2 cores; stage 2 of the shipped weights, captions that name the background:
``--config configs/train/tiny_clip_shapes_background.py``), writes the fp16 weights
(``--export``, default
``OUTPUT/ovdense-tiny-vit_shapes.pt``) and reports the image-level zero-shot accuracy on seen
and held-out compositions (``zero_shot.json`` in the output folder).

Nothing is written into the installed ovdense package unless asked for: ``--update-bundled``
(maintainers) replaces the shipped ``ovdense/assets/weights/ovdense-tiny-vit_shapes.pt``.

Examples::

    ovdense train-tiny-clip                       # OUTPUT/ovdense-tiny-vit_shapes.pt
    ovdense train-tiny-clip --resume              # continue an interrupted run
    ovdense train-tiny-clip train.max_iter=50 --export /tmp/tiny.pt   # a quick try
    ovdense train-tiny-clip --config configs/train/tiny_clip_shapes_background.py --update-bundled
                                                  # stage 2 -> the shipped weights

(``python tools/train_tiny_clip.py ...`` runs the same code.)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..engine import Trainer, load_train_config
from ..evaluation.shapes import shapes_zero_shot
from ..modeling.clip import load_clip
from ..modeling.clip.bundled import ASSETS_DIR, BUNDLED_WEIGHTS
from ..utils.cli import (
    UserError,
    add_device_argument,
    add_output_argument,
    add_overrides_argument,
    run_cli,
)
from ..utils.io import atomic_write_text

#: The installed package: nothing is written under it without ``--update-bundled``.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONFIG = PACKAGE_DIR / "configs" / "train" / "tiny_clip_shapes.py"
MODEL = "ovdense-tiny-vit"
#: The shipped weights (``--update-bundled`` writes them).
BUNDLED_EXPORT = ASSETS_DIR / "weights" / BUNDLED_WEIGHTS[(MODEL, "shapes")]
INTERRUPT_HINT = "a checkpoint was saved; run the same command with --resume to continue"


def _inside_package(path: str | Path) -> bool:
    return Path(path).resolve().is_relative_to(PACKAGE_DIR)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=str(CONFIG), help="training config")
    run = p.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue from OUTPUT/last_checkpoint")
    run.add_argument(
        "--overwrite", action="store_true", help="start again in an output folder holding a run"
    )
    add_output_argument(p, "output folder (sets train.output_dir)")
    add_device_argument(p, "cpu, cuda, cuda:N (sets train.device)")
    p.add_argument(
        "--export",
        default=None,
        help="fp16 weights to write (default: OUTPUT/ovdense-tiny-vit_shapes.pt)",
    )
    p.add_argument(
        "--update-bundled",
        action="store_true",
        help="allow writing into the installed ovdense package; without --export, replace the "
        "shipped weights (maintainers only)",
    )
    p.add_argument("--eval-images", type=int, default=3000, help="zero-shot test images")
    add_overrides_argument(p, "config overrides: key.path=value")
    return p.parse_intermixed_args(argv)  # key=value overrides anywhere


def main(argv: Sequence[str] | None = None) -> int:
    """Train, export, report; user errors are raised (``run_cli`` shows them as one line)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_train_config(args.config, args.opts, args.output, device=args.device)
    output_dir = Path(cfg.train.output_dir)
    if args.export is not None:
        export = Path(args.export)
    elif args.update_bundled:
        export = BUNDLED_EXPORT
    else:
        export = output_dir / BUNDLED_WEIGHTS[(MODEL, "shapes")]
    if _inside_package(output_dir):
        raise UserError(
            f"The output folder {output_dir} is inside the installed ovdense package "
            f"({PACKAGE_DIR}); pass --output with a folder outside it."
        )
    if _inside_package(export) and not args.update_bundled:
        raise UserError(
            f"--export {export} is inside the installed ovdense package ({PACKAGE_DIR}); "
            "export elsewhere, or add --update-bundled to replace the shipped weights on purpose."
        )
    trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
    trainer.train()
    model: Any = trainer.model  # the config's model: a ContrastiveCLIP for CLIP training
    model.save_open_clip_checkpoint(export, dtype=torch.float16)
    clip = load_clip(MODEL, checkpoint=export)
    result = shapes_zero_shot(clip, num_images=args.eval_images)
    report = json.dumps(result, indent=2)
    atomic_write_text(output_dir / "zero_shot.json", report + "\n")
    print(f"Wrote {export}\nZero-shot accuracy (%):\n{report}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupt_hint=INTERRUPT_HINT))
