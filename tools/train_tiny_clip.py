#!/usr/bin/env python
"""Train the tiny CLIP of the shapes world, shipped as ``load_clip("ovdense-tiny-vit", "shapes")``.

Runs ``ovdense/configs/train/tiny_clip_shapes.py`` on the training engine (CPU by default,
about an hour on 2 cores), writes the fp16 weights to
``ovdense/assets/weights/ovdense-tiny-vit_shapes.pt`` (``--export``) and reports the image-level
zero-shot accuracy on seen and held-out compositions (``zero_shot.json`` in the output folder).

Examples::

    python tools/train_tiny_clip.py                       # the shipped weights (seed 0)
    python tools/train_tiny_clip.py --resume              # continue an interrupted run
    python tools/train_tiny_clip.py train.max_iter=50 --export /tmp/tiny.pt   # a quick try
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from ovdense.engine import Trainer, load_train_config
from ovdense.evaluation.shapes import shapes_zero_shot
from ovdense.modeling.bundled import ASSETS_DIR, BUNDLED_WEIGHTS
from ovdense.modeling.clip import load_clip
from ovdense.utils.cli import USER_ERRORS, report_user_error
from ovdense.utils.io import atomic_write_text

CONFIG = Path(__file__).resolve().parent.parent / "ovdense/configs/train/tiny_clip_shapes.py"
MODEL = "ovdense-tiny-vit"
DEFAULT_EXPORT = ASSETS_DIR / "weights" / BUNDLED_WEIGHTS[(MODEL, "shapes")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=str(CONFIG), help="training config")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last_checkpoint")
    p.add_argument("--output", default=None, help="output folder (sets train.output_dir)")
    p.add_argument("--export", default=str(DEFAULT_EXPORT), help="fp16 weights to write")
    p.add_argument("--eval-images", type=int, default=3000, help="zero-shot test images")
    p.add_argument("opts", nargs="*", default=[], help="config overrides: key.path=value")
    args = p.parse_intermixed_args(argv)  # key=value overrides anywhere
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_train_config(args.config, args.opts, args.output)
        trainer = Trainer(cfg, resume=args.resume)
        trainer.train()
        trainer.model.save_open_clip_checkpoint(args.export, dtype=torch.float16)
        clip = load_clip(MODEL, checkpoint=args.export)
        result = shapes_zero_shot(clip, num_images=args.eval_images)
    except USER_ERRORS as err:
        return report_user_error(err)
    report = json.dumps(result, indent=2)
    atomic_write_text(Path(cfg.train.output_dir) / "zero_shot.json", report + "\n")
    print(f"Wrote {args.export}\nZero-shot accuracy (%):\n{report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
