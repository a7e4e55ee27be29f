#!/usr/bin/env python
"""Evaluate one method on the eight standard OVSS benchmarks and write one table.

Example::

    python tools/eval_all.py --config naclip --data-root ~/datasets
    python tools/eval_all.py --config sclip --protocol unified --limit 20

Runs ``tools/eval_seg.py``'s evaluation for VOC21, PC60, COCO-Object, VOC20, PC59, COCO-Stuff,
Cityscapes and ADE20K (``--datasets`` to choose), each resumable in its own output folder, and
writes ``<output>/table.md`` and ``table.json``: mIoU per benchmark, the average, and for the
paper protocol the numbers each paper published (REFERENCE §7) next to them. A benchmark that is
not on disk is reported as missing and the others still run.

``--datasets shapes_seg`` evaluates on the generated shapes world instead (with a
``shapes/<method>`` preset and the bundled tiny CLIP; mIoU of seen and held-out compositions
as extra columns)::

    python tools/eval_all.py --config shapes/naclip --datasets shapes_seg
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ovdense.evaluation.base import format_metric, json_safe
from ovdense.evaluation.runner import PROTOCOLS, method_name, run_eval
from ovdense.modeling.clip import WeightsUnavailableError
from ovdense.utils.cli import report_user_error

BENCHMARKS = {
    "voc21": "VOC21",
    "context60": "PC60",
    "coco_object": "Object",
    "voc20": "VOC20",
    "context59": "PC59",
    "coco_stuff171": "Stuff",
    "cityscapes": "City",
    "ade20k_150": "ADE",
}

#: mIoU (%) published with each method's own settings, CLIP ViT-B/16 (REFERENCE §7).
PUBLISHED = {
    "sclip": [59.63, 31.74, 33.52, 81.54, 34.46, 22.77, 32.34, 16.45],
    "naclip": [64.07, 34.99, 36.19, 83.03, 38.35, 25.69, 38.27, 19.05],
    "clearclip": [51.8, 32.6, 33.0, 80.9, 35.9, 23.9, 30.0, 16.7],
    "maskclip": [None, None, None, 61.8, 25.5, 17.5, 25.0, 14.2],  # third-party re-run
}


#: Generated test/demo datasets (not in the default run nor in the average): ``--datasets
#: shapes_seg`` adds their mIoU and the mIoU of each class group (seen / held-out).
EXTRA = {"shapes_seg": "Shapes", "shapes_seg_objects": "Shapes-obj"}


def build_table(
    method: str,
    protocol: str,
    miou: dict[str, float | None],
    groups: dict[str, dict[str, float | None]] | None = None,
) -> str:
    """Markdown table: one column per dataset (+ ``<Name> <group>`` columns for datasets with
    class groups), the average over the OVSS benchmarks, and the published row if known."""
    groups = groups or {}
    names, values = [], []
    for d, v in miou.items():
        names.append(BENCHMARKS.get(d) or EXTRA.get(d, d))
        values.append(v)
        for g, gv in groups.get(d, {}).items():
            names.append(f"{EXTRA.get(d, d)} {g.replace('_', '-')}")
            values.append(gv)
    ovss = [v for d, v in miou.items() if d in BENCHMARKS]
    done = [v for v in ovss if v is not None]
    avg = sum(done) / len(done) if len(done) == len(ovss) and done else None
    lines = [
        f"# {method}, {protocol} protocol (mIoU %)",
        "",
        "| | " + " | ".join(names) + " | Avg |",
        "|---|" + "---|" * (len(names) + 1),
        f"| ovdense | {' | '.join(format_metric(v) for v in values)} | {format_metric(avg)} |",
    ]
    if protocol == "paper" and method in PUBLISHED and not groups:
        pub = dict(zip(BENCHMARKS, PUBLISHED[method]))
        row = [pub.get(d) for d in miou]
        pub_avg = sum(row) / len(row) if all(v is not None for v in row) else None
        cells = " | ".join(format_metric(v) for v in [*row, pub_avg])
        lines.append(f"| published | {cells} |")
    return "\n".join(lines) + "\n"


def run_name(config: str) -> str:
    """Output-folder name of a config: the method (``naclip``) for a method preset, the
    preset path for other presets (``shapes/naclip`` -> ``shapes_naclip``), else the stem."""
    text = str(config)
    if not text.endswith((".py", ".yaml")) and "/" in text and not text.startswith("seg/"):
        return text.replace("/", "_")
    return method_name(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True)
    p.add_argument("--protocol", default="paper", choices=PROTOCOLS)
    p.add_argument("--datasets", nargs="+", default=list(BENCHMARKS), choices=[*BENCHMARKS, *EXTRA])
    p.add_argument("--data-root", default=None)
    p.add_argument("--output", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("opts", nargs="*", default=[])
    args = p.parse_intermixed_args(argv)  # key=value overrides anywhere
    method = run_name(args.config)
    out = Path(args.output or Path("output") / "eval" / f"{method}_{args.protocol}")
    miou: dict[str, float | None] = {}
    groups: dict[str, dict[str, float | None]] = {}
    for name in args.datasets:
        try:
            res = run_eval(
                args.config,
                name,
                protocol=args.protocol,
                data_root=args.data_root,
                output=out / name,
                limit=args.limit,
                device=args.device,
                checkpoint=args.checkpoint,
                overrides=args.opts,
            )
            miou[name] = res["metrics"]["mIoU"]
            groups[name] = {
                k[len("mIoU_") :]: v for k, v in res["metrics"].items() if k.startswith("mIoU_")
            }
        except WeightsUnavailableError as err:
            return report_user_error(err)
        except (FileNotFoundError, ValueError) as err:
            print(f"{name}: not evaluated ({err})", file=sys.stderr)
            miou[name] = None
    groups = {k: v for k, v in groups.items() if v}
    table = build_table(method, args.protocol, miou, groups)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table)
    (out / "table.json").write_text(
        json.dumps(
            {
                "method": method,
                "protocol": args.protocol,
                "mIoU": json_safe(miou),
                "mIoU_groups": json_safe(groups),
            },
            indent=2,
        )
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
