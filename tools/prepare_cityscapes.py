#!/usr/bin/env python
"""Write Cityscapes ``*_gtFine_labelTrainIds.png`` from the official ``*_gtFine_labelIds.png``.

Input: the official ``gtFine_trainvaltest.zip`` (``gtFine/{split}/{city}/*_gtFine_labelIds.png``)
and ``leftImg8bit_trainvaltest.zip`` (``leftImg8bit/{split}/{city}/*_leftImg8bit.png``),
extracted into one folder. Output, under ``<data-root>/cityscapes/`` (benchmark
``cityscapes``): ``gtFine/{split}/{city}/{x}_gtFine_labelTrainIds.png``, uint8, the 19 train ids
0..18 of the standard table (``cityscapesscripts/helpers/labels.py``, written out below) and 255
for every other id. When the input folder is ``<data-root>/cityscapes`` (the usual case) the
labels are written next to the official ones; otherwise ``--link-images`` places the images.

Example::

    python tools/prepare_cityscapes.py --data-root ~/datasets   # reads ~/datasets/cityscapes
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

IGNORE = 255

#: The standard Cityscapes table: label id -> (name, train id); train id 255 = ignored.
#: (License plate, id -1, never appears in the uint8 labelIds images.)
# fmt: off
CITYSCAPES_LABELS: dict[int, tuple[str, int]] = {
    0: ("unlabeled", 255), 1: ("ego vehicle", 255), 2: ("rectification border", 255),
    3: ("out of roi", 255), 4: ("static", 255), 5: ("dynamic", 255), 6: ("ground", 255),
    7: ("road", 0), 8: ("sidewalk", 1), 9: ("parking", 255), 10: ("rail track", 255),
    11: ("building", 2), 12: ("wall", 3), 13: ("fence", 4), 14: ("guard rail", 255),
    15: ("bridge", 255), 16: ("tunnel", 255), 17: ("pole", 5), 18: ("polegroup", 255),
    19: ("traffic light", 6), 20: ("traffic sign", 7), 21: ("vegetation", 8),
    22: ("terrain", 9), 23: ("sky", 10), 24: ("person", 11), 25: ("rider", 12),
    26: ("car", 13), 27: ("truck", 14), 28: ("bus", 15), 29: ("caravan", 255),
    30: ("trailer", 255), 31: ("train", 16), 32: ("motorcycle", 17), 33: ("bicycle", 18),
}
# fmt: on

ARCHIVES = {
    "gtFine": "gtFine_trainvaltest.zip from https://www.cityscapes-dataset.com/downloads/",
    "leftImg8bit": "leftImg8bit_trainvaltest.zip from https://www.cityscapes-dataset.com/downloads/",
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


def _norm(name: str) -> str:
    return name.lower().replace(" ", "").replace("_", "")


# --------------------------------------------------------------------------------------------
# label table


def train_id_lut() -> np.ndarray:
    """256-entry table: label id -> train id (0..18), 255 for every other value."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for label_id, (_, train_id) in CITYSCAPES_LABELS.items():
        lut[label_id] = train_id
    return lut


def train_id_names() -> list[str]:
    """The 19 train-id class names in train-id order."""
    named = sorted((t, n) for n, t in CITYSCAPES_LABELS.values() if t != IGNORE)
    return [n for _, n in named]


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """``*_gtFine_labelIds`` values -> ``labelTrainIds`` (uint8, 255 ignore)."""
    return train_id_lut()[label_ids]


# --------------------------------------------------------------------------------------------
# conversion


def prepare_cityscapes(
    cityscapes_root: Path,
    data_root: Path,
    *,
    split: str = "val",
    link_images: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Summary:
    """Write ``<data-root>/cityscapes/gtFine/<split>/<city>/*_gtFine_labelTrainIds.png``.

    Args:
        cityscapes_root: Folder holding the official ``gtFine/`` and ``leftImg8bit/``.
        data_root: Output root.
        split: ``"val"`` (the benchmark), ``"train"`` or ``"test"``.
        link_images: ``"symlink"`` or ``"copy"`` the ``leftImg8bit`` images into the output
            tree (only when it is not the input tree); ``None`` leaves them.
        overwrite: Rewrite existing outputs.
        progress: Show a progress bar.
    """
    gt_dir = _need(cityscapes_root / "gtFine" / split, "Cityscapes gtFine", ARCHIVES["gtFine"])
    out_root = data_root / "cityscapes"
    same_tree = out_root.resolve() == cityscapes_root.resolve()
    img_dir = cityscapes_root / "leftImg8bit" / split
    if link_images and not same_tree:
        _need(img_dir, "Cityscapes leftImg8bit", ARCHIVES["leftImg8bit"])
    files = sorted(gt_dir.glob("*/*_gtFine_labelIds.png"))
    if not files:
        raise InputError(f"no */*_gtFine_labelIds.png in '{gt_dir}'; unzip {ARCHIVES['gtFine']}")
    s = Summary()
    names = read_classnames(classnames_dir() / "cls_city_scapes.txt")
    if [_norm(n) for n in train_id_names()] != [_norm(n.split(",")[0]) for n in names]:
        s.warn("the train-id order differs from cls_city_scapes.txt")
    lut = train_id_lut()
    for f in tqdm(files, desc="cityscapes", unit="file", disable=not progress):
        stem = f.name[: -len("_gtFine_labelIds.png")]
        city = f.parent.name
        dst = out_root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"
        if dst.exists() and not overwrite:
            s.skipped += 1
        else:
            try:
                ids = np.array(Image.open(f))
            except OSError as err:
                s.failed += 1
                s.warn(f"cannot read {f}: {err}")
                continue
            if ids.ndim != 2 or ids.dtype != np.uint8:
                s.failed += 1
                s.warn(f"{f} is not a single-channel 8-bit labelIds image")
                continue
            atomic_save_label(lut[ids], dst)
            s.written += 1
        if link_images and not same_tree:
            src = img_dir / city / f"{stem}_leftImg8bit.png"
            out_img = out_root / "leftImg8bit" / split / city / src.name
            if out_img.exists() or out_img.is_symlink():
                continue
            if src.is_file():
                place_file(src, out_img, link_images)
            else:
                s.warn(f"image missing: {src}")
    if not link_images and not (out_root / "leftImg8bit" / split).is_dir():
        s.warn(
            f"no images in {out_root / 'leftImg8bit' / split}: unzip {ARCHIVES['leftImg8bit']} "
            "there or use --link-images"
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
        "--cityscapes-root",
        default=None,
        help="folder with the official gtFine/ and leftImg8bit/ (default: <data-root>/cityscapes)",
    )
    p.add_argument("--data-root", default=None, help="output root (default: $OVDENSE_DATASETS)")
    p.add_argument("--split", default="val", choices=("val", "train", "test"))
    p.add_argument(
        "--link-images",
        nargs="?",
        const="symlink",
        choices=("symlink", "copy"),
        default=None,
        help="symlink (default) or copy the images into <data-root>/cityscapes/leftImg8bit",
    )
    p.add_argument("--overwrite", action="store_true", help="rewrite existing outputs")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; 0 on success, 1 if some files failed, 2 on a missing input."""
    args = parse_args(argv)
    try:
        data_root = resolve_data_root(args.data_root)
        src = (
            Path(args.cityscapes_root).expanduser()
            if args.cityscapes_root
            else data_root / "cityscapes"
        )
        s = prepare_cityscapes(
            src,
            data_root,
            split=args.split,
            link_images=args.link_images,
            overwrite=args.overwrite,
        )
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(s.report(f"cityscapes ({args.split})"))
    return 1 if s.failed else 0


if __name__ == "__main__":
    sys.exit(main())
