"""CLIPSelf's region-classification benchmark: zero-shot classification of the COCO panoptic
val ground-truth boxes and masks from a segmentor's dense features
(docs/methods.md#clipself-evaluation).

Example::

    ovdense eval-regions --config naclip \\
        --panoptic-json coco/annotations/panoptic_val2017.json \\
        --panoptic-dir coco/panoptic_val2017 --images coco/val2017 \\
        --mode boxes masks --output output/regions/naclip model.short_side=1024

Prints top-1 and mean per-class accuracy (percent) for things, stuff and all classes for each
mode, and writes ``<output>/results.json``. ``--dataset shapes_det`` (a COCO-instances set of
the catalog) replaces the three panoptic paths; its seen / held-out groups are reported::

    ovdense eval-regions --config shapes/maskclip --dataset shapes_det

``key=value`` arguments override the preset (e.g. ``model.short_side=1024``); ``--model``,
``--pretrained`` and ``--checkpoint`` replace its CLIP weights as in ``ovdense eval``.
(``python tools/eval_regions.py ...`` runs the same code.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import instantiate
from ..data import get_instances_files
from ..evaluation.base import format_metric, json_safe
from ..evaluation.regions import (
    MODES,
    CocoInstances,
    CocoPanoptic,
    evaluate_regions,
    load_coco_panoptic,
)
from ..evaluation.runner import output_name
from ..model_zoo import clip_source_overrides, get_config
from ..utils.cli import (
    add_device_argument,
    add_model_source_arguments,
    add_output_argument,
    add_overrides_argument,
    model_source,
    resolve_device,
    run_cli,
)
from ..utils.io import atomic_write_text, remove_stale_temporaries


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="method preset or config file")
    p.add_argument("--panoptic-json", help="panoptic_val2017.json")
    p.add_argument("--panoptic-dir", help="folder of the panoptic PNGs")
    p.add_argument("--images", help="folder of the images (val2017)")
    p.add_argument(
        "--dataset",
        help="a COCO-instances dataset of the catalog instead of the panoptic files "
        "(e.g. shapes_det; seen / held-out reported when the categories carry the flag)",
    )
    p.add_argument("--data-root", default=None, help="data root for --dataset")
    p.add_argument(
        "--mode", nargs="+", default=list(MODES), metavar="{boxes,masks}", help="region kinds"
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    add_output_argument(p, "output folder (default: output/regions/<preset>)")
    add_device_argument(p)
    add_model_source_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_overrides_argument(p)
    args = p.parse_intermixed_args(argv)  # key=value overrides anywhere
    # ``--mode boxes masks key=value`` : argparse hands the overrides to --mode; move them back
    args.opts = [m for m in args.mode if "=" in m] + args.opts
    args.mode = [m for m in args.mode if "=" not in m]
    bad = [m for m in args.mode if m not in MODES]
    if bad or not args.mode:
        p.error(f"argument --mode: invalid choice(s) {bad} (choose from {', '.join(MODES)})")
    panoptic = (args.panoptic_json, args.panoptic_dir, args.images)
    if args.dataset is None and not all(panoptic):
        p.error("give --panoptic-json, --panoptic-dir and --images, or --dataset NAME")
    if args.dataset is not None and any(panoptic):
        p.error("--dataset replaces --panoptic-json/--panoptic-dir/--images: give one or the other")
    return args


def format_table(results: dict[str, Any], modes: list[str]) -> str:
    """A markdown table: one row per mode, top-1 / mean accuracy for things / stuff / all
    (panoptic) or for all and the dataset's class groups (e.g. seen / held-out)."""
    groups = results.get("groups") or ["things", "stuff"]
    groups = [*groups, "all"]
    head = " | ".join(f"{g.replace('_', '-')} {k}" for g in groups for k in ("top-1", "mAcc"))
    lines = [f"| mode | {head} |", "|---|" + "---|" * (2 * len(groups))]
    for mode in modes:
        r = results[mode]
        cells = [format_metric(r[g][k]) for g in groups for k in ("top1", "mean_acc")]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the segmentor, evaluate, write ``results.json``; returns the results."""
    modes = list(dict.fromkeys(args.mode))
    dataset: CocoPanoptic | CocoInstances
    if args.dataset is not None:
        json_path, image_dir = get_instances_files(args.dataset, args.data_root)
        dataset = CocoInstances(json_path, image_dir, limit=args.limit)
    else:
        dataset = load_coco_panoptic(
            args.panoptic_json, args.panoptic_dir, args.images, limit=args.limit
        )
    clip = clip_source_overrides(**model_source(args)) if hasattr(args, "model") else []
    cfg = get_config(args.config, [*clip, *args.opts])
    device = resolve_device(args.device)
    seg = instantiate(cfg.model).to(device).eval()
    results = evaluate_regions(seg, dataset, mode=modes, progress=not args.no_progress)
    out_dir = Path(args.output or Path("output") / "regions" / output_name(args.config))
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)  # left by killed runs
    results = {
        "config": str(args.config),
        "overrides": [*clip, *args.opts],
        "short_side": getattr(seg, "short_side", None),
        "modes": modes,
        "groups": list(getattr(dataset, "groups", None) or []),
        **results,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    atomic_write_text(
        out_dir / "results.json", json.dumps(json_safe(results), indent=2, ensure_ascii=False)
    )
    results["output"] = str(out_dir)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; raises user errors (``run_cli`` turns them into one line and exit code 2)."""
    args = parse_args(argv)
    resolve_device(args.device)  # a missing GPU is one line, before anything is loaded
    results = run(args)
    print(format_table(results, results["modes"]))
    print(
        f"{results['num_regions']} regions in {results['num_images']} images -> "
        f"{Path(results['output']) / 'results.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
