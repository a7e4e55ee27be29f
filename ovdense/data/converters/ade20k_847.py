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

    ovdense prepare ade20k_847 --ade-root ~/downloads/ADE20K_2021_17_01 --data-root ~/datasets

(also ``python -m ovdense.data.converters.ade20k_847 ...`` or
``python tools/prepare_ade20k_847.py ...``)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...utils.io import place_file
from .. import prepare

IGNORE = 65535
NUM_CLASSES = 847

ARCHIVES = {
    "ade": "ADE20K_2021_17_01.zip from https://ade20k.csail.mit.edu/ (the full dataset)",
}

# --------------------------------------------------------------------------------------------
# decoding and class table


def load_index(path: Path) -> dict:
    """Read ``index_ade20k.pkl``; checks that it has ``objectnames``, ``filename``, ``folder``."""
    expected = f"expected ADE20K_2021_17_01/index_ade20k.pkl from {ARCHIVES['ade']}"
    prepare.require(path, "ADE20K index", ARCHIVES["ade"], is_dir=False)
    try:
        index = prepare.safe_pickle_load(path)  # never runs code from the file
    except Exception as err:  # any unpickling failure: a damaged or different file
        raise prepare.InputError(
            f"cannot read '{path}' ({type(err).__name__}: {err}); {expected}"
        ) from err
    if not isinstance(index, dict) or "objectnames" not in index:
        raise prepare.InputError(f"'{path}' has no 'objectnames'; {expected}")
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
) -> prepare.Summary:
    """Write ``<data-root>/ADE20K_2021_17_01/{images,annotations}_detectron2/validation``.

    Args:
        ade_root: The extracted official ``ADE20K_2021_17_01`` folder.
        data_root: Output root.
        image_mode: ``"copy"`` or ``"symlink"`` for the images.
        overwrite: Rewrite existing outputs.
        progress: Show a progress bar.
    """
    val_dir = prepare.require(
        ade_root / "images" / "ADE" / "validation", "ADE20K images", ARCHIVES["ade"]
    )
    index = load_index(ade_root / "index_ade20k.pkl")
    job = prepare.Conversion(overwrite=overwrite, progress=progress)
    s = job.summary
    names847 = prepare.read_class_file("cls_ade20k847.txt")
    if len(names847) != NUM_CLASSES:
        s.warn(f"cls_ade20k847.txt has {len(names847)} lines, expected {NUM_CLASSES}")
    lut, unmatched, _ = build_lut(list(index["objectnames"]), names847)
    if unmatched:
        s.warn(
            f"{len(unmatched)} of {len(names847)} classes match no ADE object name (never "
            f"labelled): {'; '.join(unmatched[:10])}" + (" ..." if len(unmatched) > 10 else "")
        )
    images = prepare.require_files(
        val_dir.rglob("*.jpg"),
        f"no .jpg files under '{val_dir}'; extract {ARCHIVES['ade']}",
        key=lambda p: p.name,
    )
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

    def output(img: Path) -> Path:
        return ann_out / f"{img.stem}.tif"

    def convert(img: Path) -> np.ndarray:
        seg = img.with_name(f"{img.stem}_seg.png")
        if not seg.is_file():
            raise prepare.ConversionError(f"missing {seg}")
        labels, bad = convert_seg(prepare.read_image(seg, "RGB"), lut)
        if bad:
            s.warn(f"{seg.name}: {bad} pixel(s) with a class beyond objectnames -> 65535")
        return labels

    def place_image(img: Path) -> None:
        dst_img = img_out / f"{img.stem}.jpg"
        if overwrite or not (dst_img.exists() or dst_img.is_symlink()):
            place_file(img, dst_img, image_mode)

    job.convert_files(images, output, convert, desc="ade20k_847", unit="img", after=place_image)
    return s


# --------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = prepare.make_parser(__doc__)
    p.add_argument(
        "--ade-root",
        required=True,
        help="the extracted official ADE20K_2021_17_01 folder (with index_ade20k.pkl)",
    )
    prepare.add_data_root_argument(p)
    p.add_argument(
        "--image-mode",
        choices=("copy", "symlink"),
        default="copy",
        help="copy (default) or symlink the validation images",
    )
    prepare.add_overwrite_argument(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; 0 on success, 1 if some files failed, 2 on a missing input."""
    args = parse_args(argv)
    return prepare.run_conversion(
        "ade20k_847",
        lambda: prepare_ade20k_847(
            Path(args.ade_root).expanduser(),
            prepare.resolve_output_root(args.data_root),
            image_mode=args.image_mode,
            overwrite=args.overwrite,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
