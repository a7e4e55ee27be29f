"""``ovdense presets``: the presets ``--config`` accepts, with the file and a short description.

Example::

    ovdense presets                # the segmentor presets (what demo / eval / eval-all take)
    ovdense presets --kind train   # the training configs (``ovdense train``); also eval, all
    ovdense presets seg shapes     # the presets of these groups (and the aliases pointing there)
    ovdense presets --names        # names only, one per line (for scripts)

A preset is a LazyConfig file shipped in ``ovdense/configs``; the short names (``naclip``, ...)
are aliases of ``seg/`` files. Segmentor presets (``seg/``, ``shapes/``) are listed apart from
the evaluation configs (``eval/``: each method's paper settings, which ``ovdense eval`` applies
itself) and the training configs (``train/``): see ``ovdense.list_presets(kind)``. Any other
config file is given by its path.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from pathlib import Path

from ..model_zoo import ALIASES, CONFIGS_DIR, PRESET_KINDS, list_presets

__all__ = ["describe", "main", "preset_table"]


def describe(path: Path, width: int = 72) -> str:
    """The first phrase of a config file's docstring (read, never executed), cut to ``width``."""
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except (OSError, SyntaxError, ValueError):
        return ""
    text = " ".join(doc.split("\n\n")[0].split()).replace("``", "")
    for stop in (": ", ". "):
        if stop in text:
            text = text.split(stop)[0]
    text = text.rstrip(".")
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def preset_table(groups: Sequence[str] = (), kind: str | None = None) -> list[tuple[str, str, str]]:
    """``(name, file relative to ovdense/configs, description)`` of each preset, aliases first.

    Args:
        groups: Only the presets of these folders (e.g. ``seg``), when given.
        kind: Only the presets of this kind (:func:`ovdense.model_zoo.list_presets`); default:
            the segmentor presets, or every kind when ``groups`` are given.
    """
    rows = []
    for name in list_presets(kind or ("all" if groups else "seg")):
        rel = ALIASES.get(name, f"{name}.py")
        if groups and rel.split("/")[0] not in groups:
            continue
        rows.append((name, rel, describe(CONFIGS_DIR / rel)))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Print the preset table."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    known = sorted({p.parent.name for p in CONFIGS_DIR.glob("*/*.py")})
    p.add_argument(
        "groups", nargs="*", metavar="GROUP", help=f"only these groups ({', '.join(known)})"
    )
    kinds = [*PRESET_KINDS, "all"]
    p.add_argument(
        "--kind",
        choices=kinds,
        default=None,
        help="seg: segmentor presets (the default without GROUPs), eval: evaluation configs, "
        "train: training configs, all: every file",
    )
    p.add_argument("--names", action="store_true", help="print the names only")
    args = p.parse_args(argv)
    bad = [g for g in args.groups if g not in known]
    if bad:
        p.error(f"unknown group(s) {', '.join(bad)} (choose from {', '.join(known)})")
    rows = preset_table(args.groups, args.kind)
    if not rows:
        p.error(f"no preset of kind {args.kind!r} in group(s) {', '.join(args.groups)}")
    if args.names:
        print("\n".join(name for name, _, _ in rows))
        return 0
    head = ("preset", "file (ovdense/configs/)", "description")
    w_name = max(len(r[0]) for r in [head, *rows]) + 2
    w_file = max(len(r[1]) for r in [head, *rows]) + 2
    print(f"{head[0]:<{w_name}}{head[1]:<{w_file}}{head[2]}")
    for name, rel, text in rows:
        print(f"{name:<{w_name}}{rel:<{w_file}}{text}".rstrip())
    return 0


if __name__ == "__main__":
    from ..utils.cli import run_cli

    sys.exit(run_cli(main))
