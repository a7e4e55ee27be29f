"""``ovdense prepare <dataset> ...``: convert a benchmark's official archives.

Example::

    ovdense prepare coco stuff --coco-root ~/downloads/coco --data-root ~/datasets
    ovdense prepare cityscapes --data-root ~/datasets
    ovdense prepare coco --help          # one converter's options

Each converter is a module of :mod:`ovdense.data.converters` (also runnable as
``python -m ovdense.data.converters.<dataset>``); exit codes: 0 done, 1 some files failed,
2 a user error (a missing input, ...), 130 Ctrl-C (every file is written atomically: run again
to finish).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from ..data.converters import CONVERTERS
from ..utils.cli import UserError
from ..utils.registry import unknown_name_message


def overview() -> str:
    """The text of ``ovdense prepare --help``."""
    width = max(map(len, CONVERTERS)) + 2
    lines = [
        "usage: ovdense prepare <dataset> [options]   (ovdense prepare <dataset> --help)",
        "",
        "Convert a benchmark's official archives to the layout ovdense reads.",
        "",
        "datasets:",
    ]
    lines += [f"  {name:<{width}}{what}" for name, (_, what) in CONVERTERS.items()]
    return "\n".join(lines)


def _canonical(name: str) -> str:
    return name.replace("-", "_")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one converter; raises :class:`UserError` for an unknown or missing dataset name."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(overview())
        return 0
    if not args:
        print(overview(), file=sys.stderr)
        raise UserError(f"name a dataset: {', '.join(CONVERTERS)}")
    name = _canonical(args[0])
    if name not in CONVERTERS:
        raise UserError(unknown_name_message("dataset converter", args[0], list(CONVERTERS)))
    from . import program_name

    module = importlib.import_module(CONVERTERS[name][0])
    with program_name(f"ovdense prepare {name}"):
        return module.main(args[1:])
