#!/usr/bin/env python
"""Build ADE20K-847 (CAT-Seg's layout) from the official ADE20K full release.

Input: the official ``ADE20K_2021_17_01.zip`` (https://ade20k.csail.mit.edu/, registration
needed), extracted: ``ADE20K_2021_17_01/index_ade20k.pkl`` (``objectnames``, ``filename``,
``folder``) and ``images/ADE/validation/**/{name}.jpg`` with ``{name}_seg.png``, whose R and G
channels encode the object class of each pixel as ``R // 10 * 256 + G`` (0 = unlabeled,
k -> ``objectnames[k - 1]``).

Output, under ``<data-root>/ADE20K_2021_17_01/`` (benchmark ``ade20k_847``):
``images_detectron2/validation/{name}.jpg`` (copied, or symlinked with ``--image-mode
symlink``) and ``annotations_detectron2/validation/{name}.tif``: uint16, 0..846 = the lines of
``cls_ade20k847.txt`` (each line is an ADE object name, matched exactly), 65535 = unlabeled or
an object outside the 847.

Example::

    python tools/prepare_ade20k_847.py --ade-root ~/downloads/ADE20K_2021_17_01 \\
        --data-root ~/datasets
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

IGNORE = 65535
NUM_CLASSES = 847

ARCHIVES = {
    "ade": "ADE20K_2021_17_01.zip from https://ade20k.csail.mit.edu/ (the full dataset)",
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
# decoding and class table


def load_index(path: Path) -> dict:
    """Read ``index_ade20k.pkl``; checks that it has ``objectnames``, ``filename``, ``folder``."""
    expected = f"expected ADE20K_2021_17_01/index_ade20k.pkl from {ARCHIVES['ade']}"
    _need(path, "ADE20K index", ARCHIVES["ade"], is_dir=False)
    try:
        with open(path, "rb") as fh:
            index = pickle.load(fh)
    except Exception as err:  # any unpickling failure: a damaged or different file
        raise InputError(f"cannot read '{path}' ({type(err).__name__}: {err}); {expected}") from err
    if not isinstance(index, dict) or "objectnames" not in index:
        raise InputError(f"'{path}' has no 'objectnames'; {expected}")
    return index


def decode_ade_seg(rgb: np.ndarray) -> np.ndarray:
    """ADE ``*_seg.png`` (``H x W x 3``) -> object class per pixel, ``R // 10 * 256 + G``."""
    r = rgb[..., 0].astype(np.int64)
    g = rgb[..., 1].astype(np.int64)
    return r // 10 * 256 + g


def build_lut(
    objectnames: Sequence[str], names847: Sequence[str]
) -> tuple[np.ndarray, list[str], int]:
    """Table ADE object class (1-based) -> 0..846 by exact name, 65535 otherwise.

    Returns:
        The table (uint16, length ``len(objectnames) + 1``; entry 0 = unlabeled), the
        ``names847`` lines that match no object name, and the number of matched object names.
    """
    index847 = {name: k for k, name in enumerate(names847)}
    lut = np.full(len(objectnames) + 1, IGNORE, dtype=np.uint16)
    matched = 0
    for j, name in enumerate(objectnames, start=1):
        k = index847.get(str(name))
        if k is not None:
            lut[j] = k
            matched += 1
    present = {str(n) for n in objectnames}
    unmatched = [n for n in names847 if n not in present]
    return lut, unmatched, matched


def convert_seg(rgb: np.ndarray, lut: np.ndarray) -> tuple[np.ndarray, int]:
    """``*_seg.png`` pixels -> uint16 847-class labels; also the count of out-of-range pixels."""
    cls = decode_ade_seg(rgb)
    bad = cls >= len(lut)
    out = lut[np.where(bad, 0, cls)]
    return out, int(bad.sum())


# --------------------------------------------------------------------------------------------
# conversion


def prepare_ade20k_847(
    ade_root: Path,
    data_root: Path,
    *,
    image_mode: str = "copy",
    overwrite: bool = False,
    progress: bool = True,
) -> Summary:
    """Write ``<data-root>/ADE20K_2021_17_01/{images,annotations}_detectron2/validation``.

    Args:
        ade_root: The extracted official ``ADE20K_2021_17_01`` folder.
        data_root: Output root.
        image_mode: ``"copy"`` or ``"symlink"`` for the images.
        overwrite: Rewrite existing outputs.
        progress: Show a progress bar.
    """
    val_dir = _need(ade_root / "images" / "ADE" / "validation", "ADE20K images", ARCHIVES["ade"])
    index = load_index(ade_root / "index_ade20k.pkl")
    s = Summary()
    names847 = read_classnames(classnames_dir() / "cls_ade20k847.txt")
    if len(names847) != NUM_CLASSES:
        s.warn(f"cls_ade20k847.txt has {len(names847)} lines, expected {NUM_CLASSES}")
    lut, unmatched, _ = build_lut(list(index["objectnames"]), names847)
    if unmatched:
        s.warn(
            f"{len(unmatched)} of {len(names847)} classes match no ADE object name (never "
            f"labelled): {'; '.join(unmatched[:10])}" + (" ..." if len(unmatched) > 10 else "")
        )
    images = sorted(val_dir.rglob("*.jpg"), key=lambda p: p.name)
    if not images:
        raise InputError(f"no .jpg files under '{val_dir}'; extract {ARCHIVES['ade']}")
    filenames = [str(f) for f in index.get("filename", [])]
    folders = [str(f) for f in index.get("folder", [""] * len(filenames))]
    listed = {
        Path(f).stem
        for f, d in zip(filenames, folders)
        if f.startswith("ADE_val_") or "validation" in Path(d).parts
    }
    on_disk = {p.stem for p in images}
    if listed - on_disk:
        s.warn(f"{len(listed - on_disk)} validation image(s) of the index are not on disk")
    out = data_root / "ADE20K_2021_17_01"
    img_out = out / "images_detectron2" / "validation"
    ann_out = out / "annotations_detectron2" / "validation"
    for img in tqdm(images, desc="ade20k_847", unit="img", disable=not progress):
        name = img.stem
        dst = ann_out / f"{name}.tif"
        if dst.exists() and not overwrite:
            s.skipped += 1
        else:
            seg = img.with_name(f"{name}_seg.png")
            if not seg.is_file():
                s.failed += 1
                s.warn(f"missing {seg}")
                continue
            try:
                rgb = np.array(Image.open(seg).convert("RGB"))
            except OSError as err:
                s.failed += 1
                s.warn(f"cannot read {seg}: {err}")
                continue
            labels, bad = convert_seg(rgb, lut)
            if bad:
                s.warn(f"{seg.name}: {bad} pixel(s) with a class beyond objectnames -> 65535")
            atomic_save_label(labels, dst)
            s.written += 1
        dst_img = img_out / f"{name}.jpg"
        if overwrite or not (dst_img.exists() or dst_img.is_symlink()):
            place_file(img, dst_img, image_mode)
    return s


# --------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--ade-root",
        required=True,
        help="the extracted official ADE20K_2021_17_01 folder (with index_ade20k.pkl)",
    )
    p.add_argument("--data-root", default=None, help="output root (default: $OVDENSE_DATASETS)")
    p.add_argument(
        "--image-mode",
        choices=("copy", "symlink"),
        default="copy",
        help="copy (default) or symlink the validation images",
    )
    p.add_argument("--overwrite", action="store_true", help="rewrite existing outputs")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; 0 on success, 1 if some files failed, 2 on a missing input."""
    args = parse_args(argv)
    try:
        s = prepare_ade20k_847(
            Path(args.ade_root).expanduser(),
            resolve_data_root(args.data_root),
            image_mode=args.image_mode,
            overwrite=args.overwrite,
        )
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(s.report("ade20k_847"))
    return 1 if s.failed else 0


if __name__ == "__main__":
    sys.exit(main())
