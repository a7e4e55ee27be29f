"""Shared parts of the dataset converters (:mod:`ovdense.data.converters`: ``ovdense prepare
<dataset>``, ``python -m ovdense.data.converters.<dataset>``, ``tools/prepare_*.py``).

Each converter reads an official archive (extracted) and writes one benchmark's layout under a
data root. What they have in common lives here:

* :class:`Summary`: files written / skipped because present / failed, warnings, the report
  printed at the end and the exit code;
* :class:`InputError` and :func:`require`: a missing input, shown as one line that names the
  path and the official archive to download;
* :func:`resolve_output_root`: the output root from ``--data-root`` or ``$OVDENSE_DATASETS``;
* :class:`Conversion`: a run's settings and summary, with the loop "convert each input to its
  output(s), skip existing outputs unless ``overwrite``, write atomically, show a progress bar,
  count failures" and the one that places images;
* the label readers and writer;
* the command-line boilerplate (:func:`make_parser`, the shared options, :func:`run_conversion`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..utils.io import place_file
from ..utils.labels import save_label_image
from .catalog import CLASSNAMES_DIR, DATASETS_ENV

__all__ = [
    "Conversion",
    "ConversionError",
    "InputError",
    "Summary",
    "add_data_root_argument",
    "add_link_images_argument",
    "add_overwrite_argument",
    "atomic_save_label",
    "classnames_dir",
    "loose_name",
    "make_parser",
    "path_arg",
    "read_class_file",
    "read_classnames",
    "read_image",
    "read_uint8_map",
    "require",
    "require_files",
    "resolve_output_root",
    "run_conversion",
    "safe_pickle_load",
]

T = TypeVar("T")
K = TypeVar("K")

# --------------------------------------------------------------------------------------------
# Errors and the summary
# --------------------------------------------------------------------------------------------


class InputError(ValueError):
    """A missing or unreadable input; shown to the user as one line (exit code 2)."""


class ConversionError(Exception):
    """One input file cannot be converted: counted as failed, its message kept as a warning."""


@dataclass
class Summary:
    """What a conversion did: files written, skipped because present, failed, and warnings."""

    written: int = 0
    skipped: int = 0
    failed: int = 0
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Record a warning (printed with the summary)."""
        self.warnings.append(message)

    def fail(self, message: str) -> None:
        """Count one failed file and record why as a warning."""
        self.failed += 1
        self.warn(message)

    @property
    def exit_code(self) -> int:
        """The converter's exit code: 1 if some files failed, else 0."""
        return 1 if self.failed else 0

    def report(self, title: str, max_warnings: int = 20) -> str:
        """The summary block printed at the end of a run (at most ``max_warnings`` shown)."""
        lines = [
            f"{title}: {self.written} written, {self.skipped} skipped (already present; "
            f"--overwrite to redo), {self.failed} failed, {len(self.warnings)} warning(s)"
        ]
        lines += [f"  warning: {w}" for w in self.warnings[:max_warnings]]
        if len(self.warnings) > max_warnings:
            lines.append(f"  ... and {len(self.warnings) - max_warnings} more warning(s)")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def require(path: Path | None, what: str, archive: str, *, is_dir: bool = True) -> Path:
    """``path`` if it is an existing folder (``is_dir``) or file.

    Raises:
        InputError: It is not (or ``path`` is ``None``); the message names ``what``, the path
            and the ``archive`` to download and unzip.
    """
    if path is None:
        kind = "folder" if is_dir else "file"
        raise InputError(f"no {what} {kind} given; download and unzip {archive}")
    ok = path.is_dir() if is_dir else path.is_file()
    if not ok:
        kind = "folder" if is_dir else "file"
        raise InputError(f"missing {what} {kind} '{path}'; download and unzip {archive}")
    return path


def require_files(
    paths: Iterable[Path], message: str, key: Callable[[Path], Any] | None = None
) -> list[Path]:
    """``paths`` (e.g. a glob) sorted, by ``key`` if given.

    Raises:
        InputError: There are none; ``message`` says which files were expected and from where.
    """
    found = sorted(paths, key=key)
    if not found:
        raise InputError(message)
    return found


def resolve_output_root(data_root: str | None) -> Path:
    """The output root: ``--data-root`` or ``$OVDENSE_DATASETS`` (``~`` expanded).

    Unlike :func:`ovdense.data.catalog.resolve_data_root` the folder need not exist yet: the
    converters create it.

    Raises:
        InputError: Neither is given.
    """
    root = data_root or os.environ.get(DATASETS_ENV)
    if not root:
        raise InputError(f"no data root: give --data-root or set {DATASETS_ENV}")
    return Path(root).expanduser()


def classnames_dir() -> Path:
    """``ovdense/data/classnames`` (the ``cls_*.txt`` files)."""
    if not CLASSNAMES_DIR.is_dir():
        raise InputError("cannot find ovdense/data/classnames; is ovdense installed?")
    return CLASSNAMES_DIR


def read_classnames(path: Path) -> list[str]:
    """One class per line (trailing empty lines dropped; CRLF accepted)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def read_class_file(name: str) -> list[str]:
    """The lines of ``ovdense/data/classnames/<name>`` (see :func:`read_classnames`)."""
    return read_classnames(classnames_dir() / name)


def loose_name(name: str) -> str:
    """``name`` for loose comparison: lower case, spaces and underscores removed."""
    return name.lower().replace(" ", "").replace("_", "")


def read_image(path: Path, mode: str | None = None) -> np.ndarray:
    """The pixels of an image file, converted to ``mode`` (a PIL mode) if given.

    Raises:
        ConversionError: The file cannot be read.
    """
    try:
        image = Image.open(path)
        return np.array(image.convert(mode) if mode else image)
    except OSError as err:
        raise ConversionError(f"cannot read {path}: {err}") from err


def read_uint8_map(path: Path, what: str = "map") -> np.ndarray:
    """A single-channel 8-bit label image as ``uint8 [H, W]``.

    Raises:
        ConversionError: The file cannot be read or is not single-channel 8-bit (the message
            calls it ``what``).
    """
    values = read_image(path)
    if values.ndim != 2 or values.dtype != np.uint8:
        raise ConversionError(f"{path} is not a single-channel 8-bit {what}")
    return values


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def atomic_save_label(labels: np.ndarray, path: Path) -> None:
    """Write a single-channel label image (uint8 -> 8-bit, uint16 -> 16-bit) atomically.

    ``.tif`` / ``.tiff`` files are written as TIFF, everything else as PNG (the one label
    writer, :func:`ovdense.utils.labels.save_label_image`).
    """
    save_label_image(labels, path, atomic=True)


@dataclass
class Conversion:
    """One converter run: its settings (``overwrite``, ``progress``) and its :class:`Summary`.

    Its methods are the loops the converters share; each counts what it does in ``summary``.
    """

    overwrite: bool = False
    progress: bool = True
    summary: Summary = field(default_factory=Summary)

    def convert_each(
        self,
        items: Iterable[T],
        outputs: Callable[[T], Mapping[K, Path]],
        convert: Callable[[T, Sequence[K]], Mapping[K, np.ndarray]],
        *,
        desc: str | None = None,
        unit: str = "file",
        after: Callable[[T], None] | None = None,
    ) -> None:
        """Convert each input to its label files.

        For each item (under a progress bar): the outputs that exist are counted as skipped
        unless ``overwrite``; if any remain, ``convert(item, keys)`` gives their labels, each
        written with :func:`atomic_save_label` and counted as written. A
        :class:`ConversionError` counts the item as failed (its message becomes a warning) and
        moves on; ``after(item)`` runs for every item that did not fail (written or skipped).

        Args:
            items: The inputs.
            outputs: Item -> ``{key: output path}``.
            convert: ``(item, keys to write)`` -> ``{key: labels}`` for (at least) those keys.
            desc: Label of the progress bar.
            unit: Unit of the progress bar.
            after: Called with each item that did not fail.
        """
        s = self.summary
        for item in tqdm(items, desc=desc, unit=unit, disable=not self.progress):
            targets = outputs(item)
            todo = [k for k, p in targets.items() if self.overwrite or not p.exists()]
            s.skipped += len(targets) - len(todo)
            if todo:
                try:
                    labels = convert(item, todo)
                except ConversionError as err:
                    s.fail(str(err))
                    continue
                for k in todo:
                    atomic_save_label(labels[k], targets[k])
                    s.written += 1
            if after is not None:
                after(item)

    def convert_files(
        self,
        items: Iterable[T],
        output: Callable[[T], Path],
        convert: Callable[[T], np.ndarray],
        *,
        desc: str | None = None,
        unit: str = "file",
        after: Callable[[T], None] | None = None,
    ) -> None:
        """:meth:`convert_each` for one output per item: ``output(item)`` <- ``convert(item)``."""
        self.convert_each(
            items,
            lambda item: {0: output(item)},
            lambda item, _: {0: convert(item)},
            desc=desc,
            unit=unit,
            after=after,
        )

    def place_images(self, pairs: Sequence[tuple[Path, Path]], mode: str, *, source: Path) -> None:
        """Symlink or copy (``mode``) each ``(src, dst)`` image; an existing ``dst`` is kept.

        Sources that do not exist are counted and reported as one warning naming ``source``.
        """
        absent = 0
        for src, dst in tqdm(pairs, desc="images", unit="img", disable=not self.progress):
            if dst.exists() or dst.is_symlink():
                continue
            if not src.is_file():
                absent += 1
                continue
            place_file(src, dst, mode)
        if absent:
            self.summary.warn(f"{absent} image(s) missing from {source}")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


@overload
def path_arg(value: str | None, default: Path) -> Path: ...
@overload
def path_arg(value: str | None, default: None = None) -> Path | None: ...
def path_arg(value: str | None, default: Path | None = None) -> Path | None:
    """A path option's value (``~`` expanded), or ``default`` when it was not given."""
    return Path(value).expanduser() if value else default


def make_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser whose description is the tool's docstring, kept as written."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_data_root_argument(parser: argparse.ArgumentParser) -> None:
    """``--data-root``: the output root (see :func:`resolve_output_root`)."""
    parser.add_argument("--data-root", default=None, help=f"output root (default: ${DATASETS_ENV})")


def add_link_images_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--link-images [symlink|copy]`` (``symlink`` when given alone, ``None`` when absent)."""
    parser.add_argument(
        "--link-images",
        nargs="?",
        const="symlink",
        choices=("symlink", "copy"),
        default=None,
        help=help_text,
    )


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: rewrite existing outputs."""
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing outputs")


def run_conversion(title: str, run: Callable[[], Summary]) -> int:
    """Run a conversion and print its report under ``title``, through the one error path of
    every ovdense tool (:func:`ovdense.utils.cli.run_cli`).

    Returns:
        0 on success, 1 if some files failed, 2 on a user error (a missing input,
        :class:`InputError`, a full or read-only disk...: ``error: <message>`` on stderr), 130
        on Ctrl-C (every output file is written atomically, so a re-run finishes the job).
    """
    from ..utils.cli import run_cli

    def main(_argv: Sequence[str] | None) -> int:
        summary = run()
        print(summary.report(title))
        return summary.exit_code

    return run_cli(main, interrupt_hint="files written so far are complete; run again to finish")


#: ``(module, name)`` pairs a data-file pickle may refer to: numpy arrays, dtypes and scalars
#: (under numpy 1.x and 2.x module names) and plain containers. Nothing that can run code.
_SAFE_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("builtins", "complex"),
    }
)


def safe_pickle_load(path: str | os.PathLike) -> Any:
    """Unpickle a data file (e.g. ADE20K's ``index_ade20k.pkl``) without running its code.

    Only plain containers, strings, numbers and numpy arrays/scalars are accepted: any other
    global the file refers to (a function to call, a class to build) is refused, so a crafted
    file cannot execute anything.

    Raises:
        pickle.UnpicklingError: the file names a global outside the allowed set (the message
            names it).
    """
    import pickle

    class _Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in _SAFE_PICKLE_GLOBALS:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(
                f"refused to load '{module}.{name}': only plain data and numpy arrays are "
                "allowed in this file"
            )

    with open(path, "rb") as fh:
        return _Restricted(fh).load()
