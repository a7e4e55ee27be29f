"""Evaluate a training-free segmentor on a semantic-segmentation benchmark.

Examples::

    ovdense eval --config naclip --dataset voc21 --data-root ~/datasets
    ovdense eval --config sclip --dataset ade20k_150 --protocol unified --limit 50
    torchrun --nproc-per-node 2 -m ovdense eval --config naclip --dataset cityscapes
    ovdense eval --config naclip --dataset folder:imgs/:labels/:classes.txt
    ovdense eval --config corrclip --dataset voc21 --regions data/region_masks/voc

(``python tools/eval_seg.py ...`` runs the same code, also under ``torchrun``.)

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
import sys
from collections.abc import Sequence
from pathlib import Path

from ..engine.distributed import is_main_process, shutdown_distributed
from ..evaluation.runner import PROTOCOLS, run_eval
from ..utils.cli import (
    add_device_argument,
    add_model_source_arguments,
    add_output_argument,
    add_overrides_argument,
    model_source,
    resolve_device,
    run_cli,
)

#: Shown after Ctrl-C.
INTERRUPT_HINT = "run the same command again to resume (the predictions made so far are kept)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="method preset or config file")
    p.add_argument("--dataset", required=True, help="catalog name or folder:<imgs>:<labels>:<cls>")
    p.add_argument("--protocol", default="paper", choices=PROTOCOLS)
    p.add_argument("--data-root", default=None, help="datasets root (default: $OVDENSE_DATASETS)")
    add_output_argument(p, "output folder (default: output/eval/<preset>_<protocol>/<dataset>)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    add_device_argument(p)
    add_model_source_arguments(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the predictions and results already in the output folder and start afresh "
        "(needed when they were made with other settings)",
    )
    p.add_argument(
        "--regions",
        default=None,
        metavar="DIR",
        help="region maps generated beforehand, one <image stem>.npz per image (array "
        "'instance_mask', CorrCLIP's data/region_masks layout), in place of the preset's mask "
        "source",
    )
    add_overrides_argument(p)
    return p.parse_intermixed_args(argv)  # key=value overrides anywhere


def main(argv: Sequence[str] | None = None) -> int:
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
            overrides=args.opts,
            overwrite=args.overwrite,
            region_dir=args.regions,
            **model_source(args),
        )
        if is_main_process():
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
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupt_hint=INTERRUPT_HINT))
