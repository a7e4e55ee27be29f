#!/usr/bin/env python
"""Build PASCAL-Context 60/59 and 459 labels from the official full annotations (mmseg layout).

Input: the official PASCAL-Context annotations (``trainval.tar.gz``): a folder of ``{id}.mat``
files, each holding a ``LabelMap`` (uint16 ``H x W``; 1..459 index the official ``labels.txt``
"index: name" list, 0 = unlabeled), and that ``labels.txt``. Output, under
``<data-root>/VOCdevkit/VOC2010/``:

* ``SegmentationClassContext/{id}.png`` (benchmarks ``context60`` / ``context59``): uint8,
  0 = background (every class outside the 59), 1..59 = the classes of ``cls_context59.txt`` in
  its order, matched to ``labels.txt`` by name (this reproduces the Detail API / mmseg mapping);
* ``SegmentationClassContext459/{id}.png`` (benchmark ``context459``): uint16, 0..458 = the 459
  classes in ``labels.txt`` order (= ``cls_context459.txt``), 65535 = unlabeled;
* ``ImageSets/SegmentationContext/val.txt``: the converted ids (``--split-file``, e.g. mmseg's
  ``val.txt`` of 5105 ids, or every ``.mat`` file).

Images come from the official VOC2010 tar (``VOCdevkit/VOC2010/JPEGImages``): extract it into
the data root, or give ``--images <.../JPEGImages> --link-images``.

Example::

    python tools/prepare_pascal_context.py --context-root ~/downloads/pascal_context \\
        --split-file ~/downloads/pascal_context/val.txt --data-root ~/datasets
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

IGNORE_459 = 65535
NUM_CLASSES_459 = 459

# fmt: off
#: ``labels.txt`` indices of the 59 classes as hard-coded by the Detail API / mmseg's
#: converter; class k (1..59) is the k-th smallest. Only used to cross-check the name matching.
DETAIL_API_59 = (
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105,
    113, 115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308,
    324, 326, 347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454,
    458,
)
# fmt: on

ARCHIVES = {
    "context": "trainval.tar.gz from https://cs.stanford.edu/~roozbeh/pascal-context/",
    "voc2010": "VOCtrainval_03-May-2010.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2010/",
}

# --------------------------------------------------------------------------------------------
# small shared helpers (each prepare_* tool is self-contained)


class InputError(Exception):
    """A missing or unreadable input; shown to the user as one line."""


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


def _need(path: Path, what: str, archive: str, *, is_dir: bool = True) -> Path:
    ok = path.is_dir() if is_dir else path.is_file()
    if not ok:
        kind = "folder" if is_dir else "file"
        raise InputError(f"missing {what} {kind} '{path}'; download and unzip {archive}")
    return path


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_save_label(labels: np.ndarray, path: Path) -> None:
    """Write a single-channel label image (uint8 -> 8-bit, uint16 -> 16-bit) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    fmt = "TIFF" if path.suffix.lower() in (".tif", ".tiff") else "PNG"
    try:
        Image.fromarray(labels).save(tmp, format=fmt)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def place_file(src: Path, dst: Path, mode: str) -> None:
    """Symlink (``mode="symlink"``, absolute target) or copy ``src`` to ``dst`` atomically."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(dst)
    try:
        if mode == "symlink":
            os.symlink(src.resolve(), tmp)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()


def classnames_dir() -> Path:
    """``ovdense/data/classnames`` of this checkout or of the installed package."""
    here = Path(__file__).resolve().parents[1] / "ovdense" / "data" / "classnames"
    if here.is_dir():
        return here
    spec = importlib.util.find_spec("ovdense")  # finds the package without importing it
    if spec and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "data" / "classnames"
    raise InputError("cannot find ovdense/data/classnames; is ovdense installed?")


def read_classnames(path: Path) -> list[str]:
    """One class per line (trailing empty lines dropped; CRLF accepted)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def resolve_data_root(data_root: str | None) -> Path:
    """``--data-root`` or ``$OVDENSE_DATASETS``."""
    root = data_root or os.environ.get("OVDENSE_DATASETS")
    if not root:
        raise InputError("no data root: give --data-root or set OVDENSE_DATASETS")
    return Path(root).expanduser()


# --------------------------------------------------------------------------------------------
# label tables


def read_labels_txt(path: Path) -> dict[int, str]:
    """Parse the official ``labels.txt`` ("index: name" per line) into ``{index: name}``."""
    out: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        idx, sep, name = line.partition(":")
        if not sep or not idx.strip().isdigit():
            raise InputError(f"{path}:{n}: expected 'index: name', got {line!r}")
        out[int(idx)] = name.strip()
    if not out:
        raise InputError(f"'{path}' lists no classes")
    return out


def first_name(line: str) -> str:
    """The first name of a class-name line (synonyms separated by ", " or "; ")."""
    return line.split(";")[0].split(",")[0].strip()


def context59_lut(labels: dict[int, str], names59: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Table ``labels.txt`` index -> 1..59 (0 elsewhere), matching classes by first name.

    Returns:
        The table (uint8, one entry per index 0..max) and the class names that matched nothing.
    """
    by_name: dict[str, int] = {}
    for idx, name in sorted(labels.items()):
        by_name.setdefault(name, idx)
    lut = np.zeros(max(max(labels), NUM_CLASSES_459) + 1, dtype=np.uint8)
    unmatched = []
    for k, line in enumerate(names59, start=1):
        idx = by_name.get(first_name(line))
        if idx is None:
            unmatched.append(first_name(line))
        else:
            lut[idx] = k
    return lut, unmatched


def convert_459(label_map: np.ndarray, num_classes: int = NUM_CLASSES_459) -> np.ndarray:
    """``LabelMap`` (0 unlabeled, 1..459) -> uint16 0..458, 65535 for 0 and out-of-range."""
    lab = label_map.astype(np.int64)
    out = np.full(lab.shape, IGNORE_459, dtype=np.uint16)
    valid = (lab >= 1) & (lab <= num_classes)
    out[valid] = (lab[valid] - 1).astype(np.uint16)
    return out


def convert_60(label_map: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``LabelMap`` -> uint8 0..59 through :func:`context59_lut`'s table (0 outside it)."""
    lab = label_map.astype(np.int64)
    out = np.zeros(lab.shape, dtype=np.uint8)
    valid = (lab >= 0) & (lab < len(lut))
    out[valid] = lut[lab[valid]]
    return out


def load_label_map(path: Path) -> np.ndarray:
    """The ``LabelMap`` array of one official ``.mat`` file.

    Raises:
        ValueError: The file cannot be read or holds no 2-D ``LabelMap``.
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        data = loadmat(str(path), variable_names=["LabelMap"])
    except (OSError, ValueError, NotImplementedError, MatReadError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    if "LabelMap" not in data:
        raise ValueError(f"{path} has no 'LabelMap' variable")
    lab = np.asarray(data["LabelMap"])
    if lab.ndim != 2:
        raise ValueError(f"{path}: LabelMap has shape {lab.shape}, expected H x W")
    return lab


def read_ids(path: Path) -> list[str]:
    """Image ids, one per line (blank lines ignored)."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# conversion


def _write_text_atomic(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prepare_pascal_context(
    mat_dir: Path,
    labels_txt: Path,
    data_root: Path,
    *,
    split_file: Path | None = None,
    outputs: Sequence[str] = ("60", "459"),
    images: Path | None = None,
    link_images: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Summary:
    """Write the 60-class and/or 459-class PASCAL-Context labels and the split file.

    Args:
        mat_dir: Folder of official ``{id}.mat`` files.
        labels_txt: The official ``labels.txt``.
        data_root: Output root (``VOCdevkit/VOC2010/...`` is written under it).
        split_file: Ids to convert (default: every ``.mat`` file).
        outputs: Any of ``"60"`` and ``"459"``.
        images: VOC2010 ``JPEGImages`` to place with ``link_images``.
        link_images: ``"symlink"`` or ``"copy"``; ``None`` leaves the images where they are.
        overwrite: Rewrite existing outputs.
        progress: Show a progress bar.
    """
    _need(mat_dir, "PASCAL-Context annotation (.mat)", ARCHIVES["context"])
    _need(labels_txt, "PASCAL-Context labels.txt", ARCHIVES["context"], is_dir=False)
    if split_file is not None:
        _need(split_file, "split", "mmseg's PASCAL-Context val.txt (5105 ids)", is_dir=False)
    if link_images:
        _need(images, "VOC2010 JPEGImages", ARCHIVES["voc2010"])
    bad = set(outputs) - {"60", "459"}
    if bad or not outputs:
        raise InputError(f"outputs must be '60' and/or '459', got {list(outputs)}")
    labels = read_labels_txt(labels_txt)
    s = Summary()
    names459 = read_classnames(classnames_dir() / "cls_context459.txt")
    ours = [labels.get(i, "") for i in range(1, NUM_CLASSES_459 + 1)]
    diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(ours, names459)) if a != b]
    if len(labels) != NUM_CLASSES_459 or diff:
        s.warn(
            f"{labels_txt} has {len(labels)} classes; {len(diff)} differ from "
            f"cls_context459.txt: " + "; ".join(diff[:5])
        )
    lut, unmatched = context59_lut(labels, read_classnames(classnames_dir() / "cls_context59.txt"))
    if unmatched:
        s.warn(f"{len(unmatched)} context59 class(es) not in {labels_txt}: {', '.join(unmatched)}")
    matched = tuple(int(i) for i in np.flatnonzero(lut))
    if not unmatched and matched != DETAIL_API_59:
        s.warn("the context59 classes matched by name differ from the Detail API's indices")

    if split_file is not None:
        ids = read_ids(split_file)
    else:
        ids = sorted(p.stem for p in mat_dir.glob("*.mat"))
    if not ids:
        raise InputError(f"no ids: '{mat_dir}' has no .mat files ({ARCHIVES['context']})")
    base = data_root / "VOCdevkit" / "VOC2010"
    dst60, dst459 = base / "SegmentationClassContext", base / "SegmentationClassContext459"
    done: list[str] = []
    missing: list[str] = []
    for i in tqdm(ids, desc="pascal_context", unit="file", disable=not progress):
        src = mat_dir / f"{i}.mat"
        if not src.is_file():
            missing.append(i)
            continue
        targets = {k: (dst60 if k == "60" else dst459) / f"{i}.png" for k in outputs}
        todo = {k: p for k, p in targets.items() if overwrite or not p.exists()}
        s.skipped += len(targets) - len(todo)
        if todo:
            try:
                lab = load_label_map(src)
            except ValueError as err:
                s.failed += 1
                s.warn(str(err))
                continue
            if lab.size and int(lab.max()) > NUM_CLASSES_459:
                s.warn(f"{src.name}: values above {NUM_CLASSES_459} -> unlabeled")
            for k, p in todo.items():
                atomic_save_label(convert_60(lab, lut) if k == "60" else convert_459(lab), p)
                s.written += 1
        done.append(i)
    if missing:
        s.warn(f"{len(missing)} id(s) of the split have no .mat file, e.g. {missing[0]}")

    split_out = base / "ImageSets" / "SegmentationContext" / "val.txt"
    text = "".join(f"{i}\n" for i in done)
    if split_out.exists() and not overwrite:
        s.skipped += 1
        if split_out.read_text(encoding="utf-8") != text:
            s.warn(f"{split_out} exists and differs from the converted ids (--overwrite)")
    elif done:
        _write_text_atomic(text, split_out)
        s.written += 1

    jpeg = base / "JPEGImages"
    if link_images:
        absent = 0
        for i in tqdm(done, desc="images", unit="img", disable=not progress):
            dst = jpeg / f"{i}.jpg"
            if dst.exists() or dst.is_symlink():
                continue
            if not (images / f"{i}.jpg").is_file():
                absent += 1
                continue
            place_file(images / f"{i}.jpg", dst, link_images)
        if absent:
            s.warn(f"{absent} image(s) missing from {images}")
    elif done and not (jpeg / f"{done[0]}.jpg").exists():
        s.warn(
            f"images not found in {jpeg}: extract {ARCHIVES['voc2010']} into the data root or "
            "use --images <VOC2010/JPEGImages> --link-images"
        )
    return s


# --------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--context-root",
        default=".",
        help="where trainval.tar.gz was extracted (trainval/*.mat, labels.txt; default: .)",
    )
    p.add_argument("--mat-dir", default=None, help="folder of {id}.mat (default: <root>/trainval)")
    p.add_argument("--labels", default=None, help="labels.txt (default: <root>/labels.txt)")
    p.add_argument("--split-file", default=None, help="ids to convert (default: all .mat files)")
    p.add_argument("--data-root", default=None, help="output root (default: $OVDENSE_DATASETS)")
    p.add_argument(
        "--outputs",
        nargs="+",
        choices=("60", "459"),
        default=["60", "459"],
        help="which label sets to write (default: both)",
    )
    p.add_argument("--images", default=None, help="VOC2010 JPEGImages folder to link from")
    p.add_argument(
        "--link-images",
        nargs="?",
        const="symlink",
        choices=("symlink", "copy"),
        default=None,
        help="symlink (default) or copy --images into VOCdevkit/VOC2010/JPEGImages",
    )
    p.add_argument("--overwrite", action="store_true", help="rewrite existing outputs")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; 0 on success, 1 if some files failed, 2 on a missing input."""
    args = parse_args(argv)
    root = Path(args.context_root).expanduser()
    try:
        if args.link_images and not args.images:
            raise InputError("--link-images needs --images <VOCdevkit/VOC2010/JPEGImages>")
        s = prepare_pascal_context(
            Path(args.mat_dir).expanduser() if args.mat_dir else root / "trainval",
            Path(args.labels).expanduser() if args.labels else root / "labels.txt",
            resolve_data_root(args.data_root),
            split_file=Path(args.split_file).expanduser() if args.split_file else None,
            outputs=args.outputs,
            images=Path(args.images).expanduser() if args.images else None,
            link_images=args.link_images,
            overwrite=args.overwrite,
        )
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(s.report("pascal_context"))
    return 1 if s.failed else 0


if __name__ == "__main__":
    sys.exit(main())
