"""The ``ovdense`` command: one entry point, one sub-command per tool.

Installed with the package (``console_scripts`` in ``setup.py``)::

    ovdense demo --config naclip --input photos/ --classes "cat,dog" --output out/
    ovdense eval --config naclip --dataset voc21
    ovdense prepare coco stuff --coco-root ~/downloads/coco --data-root ~/datasets
    ovdense presets
    python -m ovdense ...                        # the same, without the script on PATH
    torchrun --nproc-per-node 4 -m ovdense eval ...

Each sub-command is a module of this package (or of :mod:`ovdense.data`) with a
``main(argv)`` that raises user errors; :func:`run_tool` runs it through
:func:`ovdense.utils.cli.run_cli`, the one error path of every tool (``error: <message>`` and
exit code 2 for what the user can fix, 130 after Ctrl-C with the module's ``INTERRUPT_HINT``).
The scripts in ``tools/`` and ``demo/demo.py`` are thin wrappers around the same modules.

Modules are imported only when their command runs, so ``ovdense --help`` stays quick.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["COMMANDS", "Command", "main", "run_command", "run_tool"]


@dataclass(frozen=True)
class Command:
    """A sub-command: the module holding its ``main(argv)`` and a one-line description."""

    module: str
    help: str
    func: str = "main"


#: ``ovdense <name>`` -> its module, in the order ``ovdense --help`` lists them.
COMMANDS: dict[str, Command] = {
    "demo": Command("ovdense.cli.demo", "segment images or folders with any list of words"),
    "presets": Command("ovdense.cli.presets", "list the presets that --config accepts"),
    "eval": Command(
        "ovdense.cli.eval_seg", "evaluate a method on one segmentation benchmark (mIoU)"
    ),
    "eval-all": Command(
        "ovdense.cli.eval_all", "evaluate a method on the eight OVSS benchmarks, one table"
    ),
    "eval-regions": Command(
        "ovdense.cli.eval_regions",
        "classify ground-truth boxes and masks zero-shot (CLIPSelf's benchmark)",
    ),
    "eval-det": Command(
        "ovdense.cli.eval_det",
        "evaluate an open-vocabulary detector: COCO box AP, AP50 novel / base / all",
    ),
    "eval-shapes": Command(
        "ovdense.cli.eval_shapes", "the offline shapes-world report of every strategy"
    ),
    "train": Command("ovdense.cli.train", "train a model described by a lazy config"),
    "train-tiny-clip": Command(
        "ovdense.cli.train_tiny_clip", "retrain the bundled tiny CLIP of the shapes world"
    ),
    "export-clipself": Command(
        "ovdense.cli.export_clipself",
        "write a CLIPSelf training checkpoint as an open_clip checkpoint",
    ),
    "export-clip-dinoiser": Command(
        "ovdense.cli.export_clip_dinoiser",
        "write CLIP-DINOiser heads trained by ovdense as the released last.pt",
    ),
    "convert-clip-dinoiser": Command(
        "ovdense.cli.convert_clip_dinoiser",
        "check / convert CLIP-DINOiser's released last.pt to a head state dict",
    ),
    "convert-catseg": Command(
        "ovdense.cli.convert_catseg",
        "check / convert CAT-Seg's released model_final.pth to ovdense's names",
    ),
    "convert-eva-clip": Command(
        "ovdense.cli.convert_eva_clip",
        "convert an EVA-CLIP / CLIPSelf EVA02 checkpoint to open_clip's format",
    ),
    "convert-fvit": Command(
        "ovdense.cli.convert_fvit",
        "check F-ViT's released detectors (MMDetection checkpoints) load into ovdense",
    ),
    "prepare": Command(
        "ovdense.cli.prepare",
        "convert official dataset archives (coco, pascal_context, cityscapes, ade20k_847)",
    ),
    "make-shapes-scene": Command(
        "ovdense.data.synthetic", "write one scene of the shapes world (a demo image)"
    ),
    "benchmark": Command("ovdense.cli.benchmark", "speed and memory of the text and image sides"),
    "export-onnx": Command(
        "ovdense.cli.export_onnx",
        "write a segmentor (vocabulary baked in) or its dense backbone as an ONNX file",
    ),
}


@contextlib.contextmanager
def program_name(prog: str | None) -> Iterator[None]:
    """Show ``prog`` (e.g. ``"ovdense eval"``) as the program in argparse's usage and errors.

    argparse names the program after ``sys.argv[0]``; it is set for the duration of the
    command and restored afterwards.
    """
    if prog is None:
        yield
        return
    saved = sys.argv[:1]
    if sys.argv:
        sys.argv[0] = prog
    else:
        sys.argv.append(prog)
    try:
        yield
    finally:
        sys.argv[:1] = saved


def run_tool(
    module: str,
    argv: Sequence[str] | None = None,
    *,
    func: str = "main",
    prog: str | None = None,
) -> int:
    """Import ``module`` and run its ``main(argv)`` through the one error path of every tool.

    Args:
        module: Dotted module name, e.g. ``"ovdense.cli.eval_seg"``.
        argv: Its arguments (``None``: ``sys.argv[1:]``).
        func: The entry function (``main``).
        prog: The program name argparse shows (default: ``sys.argv[0]``, e.g. a script's).

    Returns:
        The exit code (see :func:`ovdense.utils.cli.run_cli`; ``--help`` and argparse's own
        errors exit through ``SystemExit`` as usual).
    """
    from ..utils.cli import run_cli

    mod = importlib.import_module(module)
    with program_name(prog):
        return run_cli(
            getattr(mod, func),
            None if argv is None else list(argv),
            interrupt_hint=getattr(mod, "INTERRUPT_HINT", None),
        )


def run_command(name: str, argv: Sequence[str] = ()) -> int:
    """Run ``ovdense <name> <argv...>``."""
    cmd = COMMANDS[name]
    return run_tool(cmd.module, list(argv), func=cmd.func, prog=f"ovdense {name}")


def overview() -> str:
    """The text of ``ovdense --help``."""
    from ..version import __version__

    width = max(map(len, COMMANDS)) + 2
    lines = [
        "usage: ovdense <command> [options]      (ovdense <command> --help: its options)",
        "",
        f"Dense open-vocabulary segmentation with CLIP (ovdense {__version__}).",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}{cmd.help}" for name, cmd in COMMANDS.items()]
    lines += [
        "",
        "The same: python -m ovdense <command> ...; several processes:",
        "torchrun --nproc-per-node N -m ovdense eval|eval-all|train ...",
    ]
    return "\n".join(lines)


def _canonical(name: str) -> str:
    """``eval_all`` and ``eval-all`` both name ``eval-all``."""
    return name.replace("_", "-")


def main(argv: Sequence[str] | None = None) -> int:
    """``ovdense <command> [options]``: run a sub-command and return its exit code."""
    from ..utils.cli import UserError, report_user_error

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(overview(), file=sys.stderr)
        return report_user_error(UserError("give a command (ovdense --help lists them)"))
    first = args[0]
    if first in ("-h", "--help"):
        print(overview())
        return 0
    if first in ("-V", "--version"):
        from ..version import __version__

        print(f"ovdense {__version__}")
        return 0
    if first == "help":  # ``ovdense help eval`` = ``ovdense eval --help``
        if len(args) == 1:
            print(overview())
            return 0
        first, args = args[1], [args[1], "--help"]
    name = _canonical(first)
    if name not in COMMANDS:
        from ..utils.registry import unknown_name_message

        message = unknown_name_message("command", first, list(COMMANDS))
        return report_user_error(UserError(message))
    return run_command(name, args[1:])
