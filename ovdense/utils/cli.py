"""The one error-handling path of every command-line tool (demo, ``tools/*``).

Every tool's ``__main__`` block is ``sys.exit(run_cli(main))``; ``main`` raises freely and
:func:`run_cli` turns what the user can fix into one line on stderr and exit code 2:

- :data:`USER_ERRORS` — wrong names, values, keys, files, checkpoints, unreachable weights;
- file-system errors (:class:`OSError`: missing, read-only or full disk, a folder where a file is
  expected), named with the path the system reported;
- Ctrl-C: one line (exit 130), plus the tool's ``interrupt_hint`` (e.g. that ``--resume``
  continues).

Anything else is a bug in ovdense and keeps its traceback.

The options several commands share are added here, once, so they are spelled and explained
the same way everywhere: :func:`add_model_source_arguments` (``--model``, ``--pretrained``,
``--checkpoint``; :func:`model_source` reads them back), :func:`add_device_argument`,
:func:`add_output_argument` and :func:`add_overrides_argument` (the ``key=value`` positional).
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypedDict

from .weights import WeightsUnavailableError

if TYPE_CHECKING:
    import torch

__all__ = [
    "USER_ERRORS",
    "UserError",
    "add_device_argument",
    "add_model_source_arguments",
    "add_output_argument",
    "add_overrides_argument",
    "add_sam_arguments",
    "ModelSource",
    "model_source",
    "report_user_error",
    "resolve_device",
    "run_cli",
    "unit_interval",
    "user_error_message",
]


class UserError(ValueError):
    """Something the user asked for cannot be done; the message says what to do instead."""


#: Errors that come from what the user typed or has on disk: shown as one line, no traceback.
#: (Checkpoint format errors of ovdense derive from ``ValueError``.)
USER_ERRORS: tuple[type[BaseException], ...] = (
    WeightsUnavailableError,
    KeyError,
    ValueError,
    OSError,
)

#: Exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def _os_error_message(err: OSError) -> str:
    where = f": {err.filename}" if err.filename else ""
    if err.filename2:
        where += f" -> {err.filename2}"
    reasons = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EISDIR: "is a folder, expected a file",
        errno.ENOTDIR: "a file stands where a folder is expected",
        errno.ENOENT: "no such file or folder",
        errno.EEXIST: "already exists",
    }
    if err.errno in reasons and not isinstance(err, FileNotFoundError | FileExistsError):
        return f"{reasons[err.errno]}{where}"
    if err.filename is None and err.args and isinstance(err.args[0], str):
        return err.args[0]  # an OSError raised with a sentence of ours
    text = err.strerror or str(err)
    return f"{text}{where}"


def user_error_message(err: BaseException) -> str:
    """The one line to show for a user error.

    The config system re-raises errors with the config node's path and chains the original;
    a weights error is shown as its original sentence, a ``KeyError`` without its quotes, an
    ``OSError`` as its reason and the path it concerns.
    """
    if isinstance(err, WeightsUnavailableError) and isinstance(
        err.__cause__, WeightsUnavailableError
    ):
        err = err.__cause__
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    if isinstance(err, OSError):
        return _os_error_message(err)
    text = str(err) or type(err).__name__
    return text.splitlines()[0] if len(text.splitlines()) > 3 else text


def report_user_error(err: BaseException) -> int:
    """Print ``error: <message>`` to stderr and return the exit code 2."""
    print(f"error: {user_error_message(err)}", file=sys.stderr)
    return 2


def run_cli(
    main: Callable[[Sequence[str] | None], int | None],
    argv: Sequence[str] | None = None,
    *,
    interrupt_hint: str | None = None,
) -> int:
    """Run a tool's ``main(argv)`` and return its exit code.

    Args:
        main: The tool's entry point; returns an exit code (``None`` = 0) and may raise.
        argv: Arguments (``None``: ``sys.argv[1:]``, as argparse reads them).
        interrupt_hint: Added to the Ctrl-C line, e.g. ``"run again with --resume to continue"``.

    Returns:
        ``main``'s code; 2 after a user error (one line on stderr); 130 after Ctrl-C.
    """
    try:
        code = main(argv)
    except KeyboardInterrupt:
        msg = "interrupted" + (f"; {interrupt_hint}" if interrupt_hint else "")
        print(f"\n{msg}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as err:
        return report_user_error(err)
    return 0 if code is None else int(code)


def resolve_device(device: str | torch.device | None = None) -> str:
    """Check a device string and return it (``None``: ``"cuda"`` when a GPU is visible, else
    ``"cpu"``).

    Raises:
        UserError: a device string torch does not know, or a CUDA device on a machine without
            one (the message says to pass ``cpu``).
    """
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    text = str(device)
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError):
        raise UserError(
            f"Unknown device {text!r}: use 'cpu', 'cuda' or 'cuda:N' (or leave it unset)."
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"Device {text!r} was asked for but no CUDA GPU is visible to torch on this "
                "machine; use --device cpu (or leave it unset)."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(
                f"Device {text!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 ...)."
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UserError(f"Device {text!r} is not available here; use --device cpu.")
    return text


# -- shared command-line options ---------------------------------------------------------------
#: Help of ``--device`` unless a command says more.
DEVICE_HELP = "cpu, cuda, cuda:N (default: cuda if present)"
#: Help of the ``key=value`` positional unless a command says more.
OVERRIDES_HELP = "config overrides: model.key=value ..."


def add_model_source_arguments(
    parser: argparse.ArgumentParser,
    *,
    model_default: str | None = None,
    model_help: str = "open_clip architecture, e.g. ViT-B-16 (default: the preset's)",
    pretrained_help: str = "open_clip weight tag, e.g. openai (default: the preset's)",
    checkpoint_help: str | None = (
        "local open_clip checkpoint, for offline use (with --pretrained: the tag of the "
        "weights it holds)"
    ),
) -> None:
    """``--model``, ``--pretrained`` and ``--checkpoint``: where the CLIP weights come from.

    The values go to :func:`ovdense.model_zoo.clip_source_overrides` (directly, or through
    ``build_segmentor`` / ``run_eval``), the one rule for combining them with a preset; read
    them back with :func:`model_source`.

    Args:
        parser: The command's parser.
        model_default: Default of ``--model`` (``None``: the preset's).
        model_help: Help of ``--model``.
        pretrained_help: Help of ``--pretrained``.
        checkpoint_help: Help of ``--checkpoint``; ``None`` leaves the option out (a command
            without local files).
    """
    parser.add_argument("--model", default=model_default, help=model_help)
    parser.add_argument("--pretrained", default=None, help=pretrained_help)
    if checkpoint_help is not None:
        parser.add_argument("--checkpoint", default=None, help=checkpoint_help)


class ModelSource(TypedDict):
    """What :func:`model_source` returns (keyword arguments of the evaluation entry points)."""

    model: str | None
    pretrained: str | None
    checkpoint: str | None


def model_source(args: argparse.Namespace) -> ModelSource:
    """``{"model", "pretrained", "checkpoint"}`` from :func:`add_model_source_arguments`'s
    options (``checkpoint`` ``None`` when the command has no such option)."""
    return {
        "model": args.model,
        "pretrained": args.pretrained,
        "checkpoint": getattr(args, "checkpoint", None),
    }


def add_device_argument(parser: argparse.ArgumentParser, help: str = DEVICE_HELP) -> None:
    """``--device`` (default ``None``; :func:`resolve_device` checks it before anything is
    built)."""
    parser.add_argument("--device", default=None, help=help)


def add_output_argument(
    parser: argparse.ArgumentParser,
    help: str = "output folder",
    *,
    required: bool = False,
    default: str | None = None,
) -> None:
    """``--output``: where a command writes."""
    parser.add_argument("--output", required=required, default=default, help=help)


def add_overrides_argument(parser: argparse.ArgumentParser, help: str = OVERRIDES_HELP) -> None:
    """The ``key=value`` config overrides, a positional (``opts``) that may stand anywhere when
    the command parses with ``parse_intermixed_args``."""
    parser.add_argument("opts", nargs="*", default=[], help=help)


#: SAM sizes ``--sam-kind`` accepts (segment-anything's names; ``ovdense.sam.SAM_KINDS``).
SAM_KIND_CHOICES: tuple[str, ...] = ("vit_b", "vit_l", "vit_h")


def unit_interval(text: str) -> float:
    """argparse type: a number in ``[0, 1]`` (NaN refused), else a one-line argument error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return value


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def add_sam_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of SAM's open-vocabulary instance masks (``ovdense.sam``), in one group.

    ``--sam-masks`` turns the instance mode on, ``--sam-refine`` the refinement of semantic
    maps (``ovdense.sam.refine``); ``--sam-kind`` and ``--sam-checkpoint`` name the model;
    the ``SamAutomaticMaskGenerator`` options keep segment-anything's names and defaults
    (``--sam-points-per-side``, ``--sam-pred-iou-thresh``, ``--sam-stability-thresh``,
    ``--sam-crop-layers``, ``--sam-crop-overlap``, ``--sam-min-region-area``); the labelling
    options are ``--sam-min-area``, ``--sam-nms-iou``, ``--sam-class-agnostic-nms``,
    ``--sam-score``, ``--sam-min-score`` and ``--sam-max-instances``. The hidden
    ``--sam-tiny-random`` uses a tiny random SAM (tests, offline smoke runs: not real masks).
    """
    g = parser.add_argument_group("SAM (instance masks, refinement)")
    g.add_argument(
        "--sam-masks",
        action="store_true",
        help="label SAM's automatic masks with the classes (open-vocabulary instances)",
    )
    g.add_argument(
        "--sam-refine",
        action="store_true",
        help="refine the semantic map with SAM prompted by its regions (Trident-style)",
    )
    g.add_argument("--sam-kind", choices=SAM_KIND_CHOICES, default="vit_b", help="SAM size")
    g.add_argument("--sam-checkpoint", default=None, metavar="PATH", help="SAM checkpoint file")
    g.add_argument(
        "--sam-points-per-side", type=_count(1), default=32, metavar="N", help="point grid side"
    )
    g.add_argument(
        "--sam-points-per-batch", type=_count(1), default=64, metavar="N", help=argparse.SUPPRESS
    )
    g.add_argument(
        "--sam-pred-iou-thresh",
        type=unit_interval,
        default=0.88,
        metavar="T",
        help="drop masks whose predicted IoU is below T",
    )
    g.add_argument(
        "--sam-stability-thresh",
        type=unit_interval,
        default=0.95,
        metavar="T",
        help="drop masks whose stability score is below T",
    )
    g.add_argument(
        "--sam-crop-layers", type=_count(0), default=0, metavar="N", help="layers of image crops"
    )
    g.add_argument(
        "--sam-crop-overlap",
        type=unit_interval,
        default=512 / 1500,
        metavar="R",
        help="overlap of neighbouring crops (fraction of the crop side)",
    )
    g.add_argument(
        "--sam-min-region-area",
        type=_count(0),
        default=0,
        metavar="PX",
        help="SAM's removal of small disconnected regions and holes (0: off)",
    )
    g.add_argument(
        "--sam-min-area", type=_count(0), default=0, metavar="PX", help="drop smaller masks"
    )
    g.add_argument(
        "--sam-nms-iou",
        type=unit_interval,
        default=0.5,
        metavar="T",
        help="mask NMS: drop a mask whose IoU with a better one of its class is above T (1: off)",
    )
    g.add_argument("--sam-class-agnostic-nms", action="store_true", help="NMS across classes too")
    g.add_argument(
        "--sam-score",
        choices=("prob", "prob_iou"),
        default="prob",
        help="instance score: class probability, or times SAM's predicted IoU",
    )
    g.add_argument(
        "--sam-min-score", type=unit_interval, default=0.0, metavar="S", help="drop lower scores"
    )
    g.add_argument(
        "--sam-max-instances",
        type=_count(0),
        default=None,
        metavar="N",
        help="keep the N best instances per image",
    )
    g.add_argument("--sam-tiny-random", action="store_true", help=argparse.SUPPRESS)
