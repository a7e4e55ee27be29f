"""Write Cityscapes ``*_gtFine_labelTrainIds.png`` from the official ``*_gtFine_labelIds.png``.

Input: the official ``gtFine_trainvaltest.zip`` (``gtFine/{split}/{city}/*_gtFine_labelIds.png``)
and ``leftImg8bit_trainvaltest.zip`` (``leftImg8bit/{split}/{city}/*_leftImg8bit.png``),
extracted into one folder. Output, under ``<data-root>/cityscapes/`` (benchmark
``cityscapes``): ``gtFine/{split}/{city}/{x}_gtFine_labelTrainIds.png``, uint8, the 19 train ids
0..18 of the standard table (``cityscapesscripts/helpers/labels.py``, written out below) and 255
for every other id. When the input folder is ``<data-root>/cityscapes`` (the usual case) the
labels are written next to the official ones; otherwise ``--link-images`` places the images.

Example::

    ovdense prepare cityscapes --data-root ~/datasets   # reads ~/datasets/cityscapes

(also ``python -m ovdense.data.converters.cityscapes ...`` or
``python tools/prepare_cityscapes.py ...``)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np

from ...utils.io import place_file
from .. import prepare

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
) -> prepare.Summary:
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
    gt_dir = prepare.require(
        cityscapes_root / "gtFine" / split, "Cityscapes gtFine", ARCHIVES["gtFine"]
    )
    out_root = data_root / "cityscapes"
    img_dir = cityscapes_root / "leftImg8bit" / split
    img_out = out_root / "leftImg8bit" / split
    link = bool(link_images) and out_root.resolve() != cityscapes_root.resolve()
    if link:
        prepare.require(img_dir, "Cityscapes leftImg8bit", ARCHIVES["leftImg8bit"])
    files = prepare.require_files(
        gt_dir.glob("*/*_gtFine_labelIds.png"),
        f"no */*_gtFine_labelIds.png in '{gt_dir}'; unzip {ARCHIVES['gtFine']}",
    )
    job = prepare.Conversion(overwrite=overwrite, progress=progress)
    s = job.summary
    names = prepare.read_class_file("cls_city_scapes.txt")
    ours = [prepare.loose_name(n) for n in train_id_names()]
    if ours != [prepare.loose_name(n.split(",")[0]) for n in names]:
        s.warn("the train-id order differs from cls_city_scapes.txt")
    lut = train_id_lut()

    def stem_and_city(f: Path) -> tuple[str, str]:
        return f.name[: -len("_gtFine_labelIds.png")], f.parent.name

    def output(f: Path) -> Path:
        stem, city = stem_and_city(f)
        return out_root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"

    def convert(f: Path) -> np.ndarray:
        return lut[prepare.read_uint8_map(f, "labelIds image")]

    def link_image(f: Path) -> None:
        stem, city = stem_and_city(f)
        src = img_dir / city / f"{stem}_leftImg8bit.png"
        dst = img_out / city / src.name
        if dst.exists() or dst.is_symlink():
            return
        if src.is_file():
            # link_image runs only when link, i.e. link_images is set
            place_file(src, dst, cast(str, link_images))
        else:
            s.warn(f"image missing: {src}")

    job.convert_files(files, output, convert, desc="cityscapes", after=link_image if link else None)
    if not link_images and not img_out.is_dir():
        s.warn(
            f"no images in {img_out}: unzip {ARCHIVES['leftImg8bit']} there or use --link-images"
        )
    return s


# --------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = prepare.make_parser(__doc__)
    p.add_argument(
        "--cityscapes-root",
        help="folder with the official gtFine/ and leftImg8bit/ (default: <data-root>/cityscapes)",
    )
    prepare.add_data_root_argument(p)
    p.add_argument("--split", default="val", choices=("val", "train", "test"))
    prepare.add_link_images_argument(
        p, "symlink (default) or copy the images into <data-root>/cityscapes/leftImg8bit"
    )
    prepare.add_overwrite_argument(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; 0 on success, 1 if some files failed, 2 on a missing input."""
    args = parse_args(argv)

    def run() -> prepare.Summary:
        data_root = prepare.resolve_output_root(args.data_root)
        src = prepare.path_arg(args.cityscapes_root, data_root / "cityscapes")
        return prepare_cityscapes(
            src,
            data_root,
            split=args.split,
            link_images=args.link_images,
            overwrite=args.overwrite,
        )

    return prepare.run_conversion(f"cityscapes ({args.split})", run)


if __name__ == "__main__":
    sys.exit(main())
