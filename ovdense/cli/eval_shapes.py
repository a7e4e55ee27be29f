"""The shapes-world report: every training-free strategy with the bundled tiny CLIP.

Measures, offline, in one run (README "Shapes world" shows the output):

* semantic segmentation on ``shapes_seg`` (200 generated val images, 128 px; background + 30
  compositions) and on ``shapes_seg_objects`` (the same images, background pixels not scored,
  like VOC20) for each ``shapes/<strategy>`` preset: mIoU, and mIoU over the seen and the
  held-out compositions (``ovdense eval-all --datasets shapes_seg shapes_seg_objects`` gives
  the same numbers);
* region classification of the ``shapes_det`` ground-truth boxes and masks (30 compositions,
  top-1 %, seen / held-out), from each preset's dense features;
* image-level zero-shot accuracy of the tiny CLIP on single-object scenes (chance 1/30).

Example::

    ovdense eval-shapes --output output/shapes_report

(``python tools/eval_shapes.py ...`` runs the same code.)

Writes ``report.md`` and ``report.json`` to the output folder. The datasets are generated on
first use (under ``$OVDENSE_DATASETS`` or ``~/.cache/ovdense/datasets``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import instantiate
from ..data import get_instances_files
from ..evaluation.base import format_metric, json_safe
from ..evaluation.regions import CocoInstances, evaluate_regions
from ..evaluation.runner import run_eval
from ..evaluation.shapes import shapes_zero_shot
from ..model_zoo import get_config
from ..modeling.clip import load_clip
from ..utils.cli import add_device_argument, add_output_argument, resolve_device, run_cli
from ..utils.io import atomic_write_text, remove_stale_temporaries

#: Shown after Ctrl-C.
INTERRUPT_HINT = (
    "run the same command again to resume the segmentation runs (their predictions so far are kept)"
)
STRATEGIES = ("vanilla", "maskclip", "sclip", "clearclip", "naclip", "resclip", "scclip")
#: With the background class (31 classes), and background pixels ignored (30, like VOC20).
DATASETS = ("shapes_seg", "shapes_seg_objects")


def evaluate(
    output: Path,
    device: str,
    data_root: str | None,
    progress: bool,
    strategies: tuple[str, ...] = STRATEGIES,
    zero_shot_images: int = 3000,
    overwrite: bool = False,
    catseg_checkpoint: str | None = None,
) -> dict[str, Any]:
    """Run every measurement; returns the report dict. With ``catseg_checkpoint`` (a head
    trained by ``configs/train/catseg_shapes.py``), the ``shapes/catseg`` preset adds a row of
    segmentation numbers (row ``catseg``; no region columns: its head labels pixels, the
    region classifier reads dense CLIP features)."""
    report: dict[str, Any] = {"segmentation": {}, "regions": {}}
    json_path, image_dir = get_instances_files("shapes_det", data_root)
    for name in strategies:
        preset = f"shapes/{name}"
        report["segmentation"][name] = {}
        for dataset in DATASETS:
            res = run_eval(
                preset,
                dataset,
                data_root=data_root,
                output=output / name / dataset,
                device=device,
                progress=progress,
                overwrite=overwrite,
            )
            report["segmentation"][name][dataset] = {
                k: res["metrics"][k] for k in ("mIoU", "mIoU_seen", "mIoU_held_out", "pAcc")
            }
        seg = instantiate(get_config(preset).model).to(device).eval()
        regions = evaluate_regions(
            seg, CocoInstances(json_path, image_dir), mode=["boxes", "masks"], progress=progress
        )
        report["regions"][name] = {
            mode: {g: regions[mode][g]["top1"] for g in ("all", "seen", "held_out")}
            for mode in ("boxes", "masks")
        }
        report["num_regions"] = regions["num_regions"]
    if catseg_checkpoint is not None:
        report["segmentation"]["catseg"] = {}
        for dataset in DATASETS:
            res = run_eval(
                "shapes/catseg",
                dataset,
                data_root=data_root,
                output=output / "catseg" / dataset,
                device=device,
                overrides=[f"model.checkpoint={catseg_checkpoint}"],
                progress=progress,
                overwrite=overwrite,
            )
            report["segmentation"]["catseg"][dataset] = {
                k: res["metrics"][k] for k in ("mIoU", "mIoU_seen", "mIoU_held_out", "pAcc")
            }
    clip = load_clip("ovdense-tiny-vit", "shapes", device=device)
    report["zero_shot"] = shapes_zero_shot(clip, num_images=zero_shot_images)
    return report


def format_report(report: dict[str, Any]) -> str:
    """Markdown tables of a report."""
    f = format_metric
    lines = [
        "| strategy | mIoU | seen | held-out | mIoU objects | seen | held-out "
        "| boxes seen | boxes held-out | masks seen | masks held-out |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, seg in report["segmentation"].items():
        reg = report["regions"].get(name)
        cells = [f(seg[d][k]) for d in DATASETS for k in ("mIoU", "mIoU_seen", "mIoU_held_out")]
        if reg is None:  # a trained head: segmentation only
            cells += ["–"] * 4
        else:
            cells += [
                f(reg["boxes"]["seen"]),
                f(reg["boxes"]["held_out"]),
                f(reg["masks"]["seen"]),
                f(reg["masks"]["held_out"]),
            ]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    zs = report["zero_shot"]
    lines += [
        "",
        f"Image-level zero-shot accuracy ({zs['all']['n']} single-object scenes, "
        f"{zs['num_classes']} classes, chance {f(zs['chance'])} %): all {f(zs['all']['acc'])} %, "
        f"seen {f(zs['seen']['acc'])} % ({zs['seen']['n']} images), held-out "
        f"{f(zs['held_out']['acc'])} % ({zs['held_out']['n']} images).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_output_argument(p, "output folder (default: %(default)s)", default="output/shapes_report")
    add_device_argument(p)
    p.add_argument("--data-root", default=None, help="where the generated datasets go")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--zero-shot-images", type=int, default=3000, help="single-object scenes")
    p.add_argument(
        "--catseg-checkpoint",
        default=None,
        help="CAT-Seg head trained by configs/train/catseg_shapes.py: adds its segmentation row",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the segmentation predictions already in the output folder and start afresh",
    )
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    out = Path(args.output)
    remove_stale_temporaries(out)  # left by killed runs (run_eval cleans its own folders)
    report = evaluate(
        out,
        device,
        args.data_root,
        not args.no_progress,
        tuple(args.strategies),
        args.zero_shot_images,
        args.overwrite,
        args.catseg_checkpoint,
    )
    text = format_report(report)
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.json", json.dumps(json_safe(report), indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupt_hint=INTERRUPT_HINT))
