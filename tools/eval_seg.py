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
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch.distributed as dist

from ovdense.evaluation.runner import PROTOCOLS, run_eval
from ovdense.utils.cli import USER_ERRORS, report_user_error


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
    p.add_argument("--checkpoint", default=None, help="local open_clip checkpoint")
    p.add_argument("opts", nargs="*", default=[], help="config overrides: model.key=value ...")
    return p.parse_intermixed_args(argv)  # key=value overrides anywhere


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run_eval(
            args.config,
            args.dataset,
            protocol=args.protocol,
            data_root=args.data_root,
            output=args.output,
            limit=args.limit,
            device=args.device,
            model=args.model,
            pretrained=args.pretrained,
            checkpoint=args.checkpoint,
            overrides=args.opts,
        )
    except USER_ERRORS as err:
        return report_user_error(err)
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
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
