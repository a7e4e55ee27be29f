"""Evaluate one method on the eight standard OVSS benchmarks and write one table.

Example::

    ovdense eval-all --config naclip --data-root ~/datasets
    ovdense eval-all --config sclip --protocol unified --limit 20

(``python tools/eval_all.py ...`` runs the same code.) Runs ``ovdense eval``'s evaluation for
VOC21, PC60, COCO-Object, VOC20, PC59, COCO-Stuff, Cityscapes and ADE20K (``--datasets`` to
choose), each resumable in its own output folder, and writes ``<output>/table.md`` and
``table.json``: mIoU per benchmark, the average, and for the paper protocol the numbers each
paper published (docs/results.md#training-free-ovss) next to them. The benchmark suite and the
published numbers are data of the method's evaluation preset: ``suite``, ``published`` and
``published_source`` in ``ovdense/configs/eval/<method>.py`` (the shared suite is the one of
``configs/eval/unified.py``). A benchmark that is not on disk is reported as missing and the
others still run; one whose every image is skipped is reported too, and the exit code is then
2. Each benchmark's folder is tied to the settings that made its predictions
(``fingerprint.json``, see ``ovdense eval --help``): ``--overwrite`` starts every benchmark
afresh.

``--datasets shapes_seg`` evaluates on the generated shapes world instead (with a
``shapes/<method>`` preset and the bundled tiny CLIP; mIoU of seen and held-out compositions
as extra columns)::

    ovdense eval-all --config shapes/naclip --datasets shapes_seg
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..data import build_semseg_dataset
from ..evaluation.base import format_metric, json_safe
from ..evaluation.runner import (
    PROTOCOLS,
    EvalPreset,
    NothingEvaluatedError,
    default_suite,
    eval_preset,
    output_name,
    resolve_eval_config,
    run_eval,
)
from ..utils.cli import (
    add_device_argument,
    add_model_source_arguments,
    add_output_argument,
    add_overrides_argument,
    model_source,
    resolve_device,
    run_cli,
)
from ..utils.io import atomic_write_text

#: Shown after Ctrl-C.
INTERRUPT_HINT = "run the same command again to resume (the predictions made so far are kept)"

#: Generated test/demo datasets (not in the default run nor in the average): ``--datasets
#: shapes_seg`` adds their mIoU and the mIoU of each class group (seen / held-out).
EXTRA = {"shapes_seg": "Shapes", "shapes_seg_objects": "Shapes-obj"}


def build_table(
    method: str,
    protocol: str,
    miou: dict[str, float | None],
    groups: dict[str, dict[str, float | None]] | None = None,
    *,
    suite: Mapping[str, str] | None = None,
    published: Mapping[str, float | None] | None = None,
) -> str:
    """Markdown table: one column per dataset (+ ``<Name> <group>`` columns for datasets with
    class groups), the average over the benchmarks of ``suite`` (catalog name -> column; default
    :func:`~ovdense.evaluation.runner.default_suite`), and under the paper protocol the
    ``published`` row (mIoU per benchmark, as the method's evaluation preset declares it) when
    there is one."""
    groups = groups or {}
    suite = default_suite() if suite is None else suite
    names, values = [], []
    for d, v in miou.items():
        names.append(suite.get(d) or EXTRA.get(d, d))
        values.append(v)
        for g, gv in groups.get(d, {}).items():
            names.append(f"{EXTRA.get(d, d)} {g.replace('_', '-')}")
            values.append(gv)
    ovss = [v for d, v in miou.items() if d in suite]
    done = [v for v in ovss if v is not None]
    avg = sum(done) / len(done) if len(done) == len(ovss) and done else None
    lines = [
        f"# {method}, {protocol} protocol (mIoU %)",
        "",
        "| | " + " | ".join(names) + " | Avg |",
        "|---|" + "---|" * (len(names) + 1),
        f"| ovdense | {' | '.join(format_metric(v) for v in values)} | {format_metric(avg)} |",
    ]
    if protocol == "paper" and published and not groups:
        row = [published.get(d) for d in miou]
        known = [v for v in row if v is not None]
        pub_avg = sum(known) / len(row) if len(known) == len(row) else None
        cells = " | ".join(format_metric(v) for v in [*row, pub_avg])
        lines.append(f"| published | {cells} |")
    return "\n".join(lines) + "\n"


def _suite_of(config: str, protocol: str) -> dict[str, str]:
    """The preset's benchmark suite; the default one when the preset cannot be read (``main``
    then reports why, once)."""
    try:
        return eval_preset(config, protocol).suite
    except Exception:  # noqa: BLE001 - reported by main's resolve_eval_config
        return default_suite()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``key=value`` overrides may stand anywhere, also after --datasets)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="method preset or config file")
    p.add_argument("--protocol", default="paper", choices=PROTOCOLS)
    p.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        metavar="DATASET",
        help="benchmarks to run (default: the 'suite' of the method's evaluation preset, the "
        f"eight OVSS ones); also {', '.join(EXTRA)}",
    )
    p.add_argument("--data-root", default=None, help="datasets root (default: $OVDENSE_DATASETS)")
    add_output_argument(
        p, "output folder, one sub-folder per dataset (default: output/eval/<preset>_<protocol>)"
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    add_device_argument(p)
    add_model_source_arguments(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the predictions and results already in the output folders and start afresh",
    )
    add_overrides_argument(p)
    args = p.parse_intermixed_args(argv)  # key=value overrides anywhere
    # ``--datasets a b key=value``: argparse hands the overrides to --datasets; move them back
    given = args.datasets
    suite = _suite_of(args.config, args.protocol)
    args.opts = [d for d in given or () if "=" in d] + args.opts
    args.datasets = [d for d in given if "=" not in d] if given is not None else list(suite)
    choices = [*suite, *EXTRA]
    bad = [d for d in args.datasets if d not in choices]
    if bad or not args.datasets:
        p.error(f"argument --datasets: invalid choice(s) {bad} (choose from {', '.join(choices)})")
    if args.limit is not None and args.limit < 1:
        p.error(f"argument --limit: must be a positive number of images, got {args.limit}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; raises user errors (``run_cli`` turns them into one line and exit code 2)."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    clip = model_source(args)
    # an unknown preset or override key stops here, once, before any benchmark runs
    resolve_eval_config(args.config, args.datasets[0], args.protocol, args.opts, **clip)
    preset: EvalPreset = eval_preset(args.config, args.protocol)
    method = output_name(args.config)
    out = Path(args.output or Path("output") / "eval" / f"{method}_{args.protocol}")
    miou: dict[str, float | None] = {}
    groups: dict[str, dict[str, float | None]] = {}
    empty: list[str] = []
    for name in args.datasets:
        miou[name] = None
        try:
            build_semseg_dataset(name, args.data_root, limit=args.limit)
        except (FileNotFoundError, ValueError) as err:  # not on disk (or no images there)
            print(f"{name}: not evaluated ({err})", file=sys.stderr)
            continue
        try:
            res = run_eval(
                args.config,
                name,
                protocol=args.protocol,
                data_root=args.data_root,
                output=out / name,
                limit=args.limit,
                device=device,
                overrides=args.opts,
                overwrite=args.overwrite,
                **clip,
            )
        except NothingEvaluatedError as err:
            print(f"{name}: not evaluated ({err})", file=sys.stderr)
            empty.append(name)
            continue
        miou[name] = res["metrics"]["mIoU"]
        groups[name] = {
            k[len("mIoU_") :]: v for k, v in res["metrics"].items() if k.startswith("mIoU_")
        }
    groups = {k: v for k, v in groups.items() if v}
    table = build_table(
        method, args.protocol, miou, groups, suite=preset.suite, published=preset.published
    )
    atomic_write_text(out / "table.md", table)
    atomic_write_text(
        out / "table.json",
        json.dumps(
            {
                "method": method,
                "protocol": args.protocol,
                "mIoU": json_safe(miou),
                "mIoU_groups": json_safe(groups),
                **(
                    {"published": preset.published, "published_source": preset.published_source}
                    if args.protocol == "paper" and preset.published
                    else {}
                ),
            },
            indent=2,
        )
        + "\n",
    )
    print(table)
    if empty:
        print(
            f"error: every image was skipped on {', '.join(empty)} (see above); the table marks "
            "it as not evaluated",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupt_hint=INTERRUPT_HINT))
