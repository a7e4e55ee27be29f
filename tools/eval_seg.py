#!/usr/bin/env python
"""Evaluate a training-free segmentor on a semantic-segmentation benchmark.

Examples::

    python tools/eval_seg.py --config naclip --dataset voc21 --data-root ~/datasets
    python tools/eval_seg.py --config sclip --dataset ade20k_150 --protocol unified --limit 50
    torchrun --nproc-per-node 2 tools/eval_seg.py --config naclip --dataset cityscapes
    python tools/eval_seg.py --config naclip --dataset folder:imgs/:labels/:classes.txt

``--protocol paper`` (default) uses the method's own evaluation settings
(``ovdense/configs/eval/<method>.py``); ``--protocol unified`` puts every method under one
setting (``ovdense/configs/eval/unified.py``). Predictions are written as label PNGs under
``<output>/preds`` as they are made, so a re-run after an interruption only scores the images
that are missing. Results go to ``<output>/results.json`` and ``results.md`` next to the resolved
config (``config.yaml``) and the library versions.

``<output>/fingerprint.json`` records what made the predictions (config, weights, dataset,
protocol, ovdense version): a run with other settings refuses to reuse them (choose another
``--output``, or ``--overwrite`` to delete them and start afresh), and ``<output>/eval.lock``
keeps a second run out of the folder while one is at work. The default output folder is
``output/eval/<preset>_<protocol>/<dataset>``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch.distributed as dist

from ovdense.evaluation.runner import PROTOCOLS, run_eval
from ovdense.utils.cli import resolve_device, run_cli

#: Shown after Ctrl-C.
INTERRUPT_HINT = "run the same command again to resume (the predictions made so far are kept)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="method preset or config file")
    p.add_argument("--dataset", required=True, help="catalog name or folder:<imgs>:<labels>:<cls>")
    p.add_argument("--protocol", default="paper", choices=PROTOCOLS)
    p.add_argument("--data-root", default=None, help="datasets root (default: $OVDENSE_DATASETS)")
    p.add_argument("--output", default=None, help="output folder")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    p.add_argument("--device", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--pretrained", default=None)
    p.add_argument(
        "--checkpoint",
        default=None,
        help="local open_clip checkpoint (with --pretrained: the tag of the weights it holds)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the predictions and results already in the output folder and start afresh "
        "(needed when they were made with other settings)",
    )
    p.add_argument("opts", nargs="*", default=[], help="config overrides: model.key=value ...")
    return p.parse_intermixed_args(argv)  # key=value overrides anywhere


def main(argv: list[str] | None = None) -> int:
    """Entry point; raises user errors (``run_cli`` turns them into one line and exit code 2)."""
    args = parse_args(argv)
    device = resolve_device(args.device)  # a missing GPU is one line, before any model is built
    try:
        results = run_eval(
            args.config,
            args.dataset,
            protocol=args.protocol,
            data_root=args.data_root,
            output=args.output,
            limit=args.limit,
            device=device,
            model=args.model,
            pretrained=args.pretrained,
            checkpoint=args.checkpoint,
            overrides=args.opts,
            overwrite=args.overwrite,
        )
        if int(os.environ.get("RANK", "0")) == 0:
            print((Path(results["config"]).parent / "results.md").read_text())
            m = results["metrics"]
            print(
                f"{results['method']} / {results['dataset']} ({results['protocol']}): "
                f"mIoU {m['mIoU']:.2f}  fwIoU {m['fwIoU']:.2f}  mAcc {m['mAcc']:.2f}  "
                f"pAcc {m['pAcc']:.2f}  ({results['num_images']} images"
                + (f", {len(results['skipped'])} skipped" if results["skipped"] else "")
                + f") -> {Path(results['config']).parent}"
            )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupt_hint=INTERRUPT_HINT))
