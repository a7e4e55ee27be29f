"""Convert the official COCO / COCO-Stuff val2017 archives to ovdense's (mmseg's) layout.

Two subcommands, both writing under ``<data-root>/coco_stuff164k/``:

``stuff``  (benchmark ``coco_stuff171``)
    ``stuffthingmaps_trainval2017/val2017/{id}.png`` (values 0..181 = COCO-Stuff id - 1,
    255 unlabeled) -> ``annotations/val2017/{id}_labelTrainIds.png`` (0..170, 255 ignore).
    The 182 ids have 11 unused ones; the 171 used ids keep their increasing order (mmseg's
    ``clsID_to_trID``): the 80 thing classes first, then the 91 stuff classes, which is the
    order of ``cls_coco_stuff.txt``.

``object`` (benchmark ``coco_object``)
    ``annotations/instances_val2017.json`` -> ``annotations/val2017/{id}_instanceTrainIds.png``
    (0 background, 1..80 the thing categories in increasing COCO category id, 255 ignore).
    Instance masks are painted largest first so that small objects stay on top; crowd
    annotations are painted with their category, as COCO-Stuff does (``--crowd ignore`` paints
    them 255 instead). ``--from-stuffthingmaps`` instead reproduces SCLIP's conversion of the
    stuffthing maps: thing values 0..89 (with gaps) -> 1..80, stuff -> 0, 255 -> 255.

Images stay in the official ``val2017`` folder unless ``--link-images`` symlinks (or, with
``--link-images copy``, copies) them to ``coco_stuff164k/images/val2017/{id}.jpg``.

Examples::

    ovdense prepare coco stuff --coco-root ~/downloads/coco --data-root ~/datasets --link-images
    ovdense prepare coco object --coco-root ~/downloads/coco --data-root ~/datasets

(also ``python -m ovdense.data.converters.coco ...`` or ``python tools/prepare_coco.py ...``)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from .. import prepare

IGNORE = 255

#: The 182 COCO-Stuff class ids (1-based, as in the official ``labels.txt``) with their names;
#: ``None`` marks the 11 ids that no annotation uses. Ids 1..91 are things, 92..182 stuff.
# fmt: off
COCO_STUFF_CLASSES: dict[int, str | None] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus",
    7: "train", 8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant",
    12: None, 13: "stop sign", 14: "parking meter", 15: "bench", 16: "bird", 17: "cat",
    18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear", 24: "zebra",
    25: "giraffe", 26: None, 27: "backpack", 28: "umbrella", 29: None, 30: None,
    31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee", 35: "skis", 36: "snowboard",
    37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove",
    41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle", 45: None,
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl",
    52: "banana", 53: "apple", 54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot",
    58: "hot dog", 59: "pizza", 60: "donut", 61: "cake", 62: "chair", 63: "couch",
    64: "potted plant", 65: "bed", 66: None, 67: "dining table", 68: None, 69: None,
    70: "toilet", 71: None, 72: "tv", 73: "laptop", 74: "mouse", 75: "remote",
    76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster",
    81: "sink", 82: "refrigerator", 83: None, 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush", 91: None,
    92: "banner", 93: "blanket", 94: "branch", 95: "bridge", 96: "building-other",
    97: "bush", 98: "cabinet", 99: "cage", 100: "cardboard", 101: "carpet",
    102: "ceiling-other", 103: "ceiling-tile", 104: "cloth", 105: "clothes", 106: "clouds",
    107: "counter", 108: "cupboard", 109: "curtain", 110: "desk-stuff", 111: "dirt",
    112: "door-stuff", 113: "fence", 114: "floor-marble", 115: "floor-other",
    116: "floor-stone", 117: "floor-tile", 118: "floor-wood", 119: "flower", 120: "fog",
    121: "food-other", 122: "fruit", 123: "furniture-other", 124: "grass", 125: "gravel",
    126: "ground-other", 127: "hill", 128: "house", 129: "leaves", 130: "light", 131: "mat",
    132: "metal", 133: "mirror-stuff", 134: "moss", 135: "mountain", 136: "mud",
    137: "napkin", 138: "net", 139: "paper", 140: "pavement", 141: "pillow",
    142: "plant-other", 143: "plastic", 144: "platform", 145: "playingfield", 146: "railing",
    147: "railroad", 148: "river", 149: "road", 150: "rock", 151: "roof", 152: "rug",
    153: "salad", 154: "sand", 155: "sea", 156: "shelf", 157: "sky-other", 158: "skyscraper",
    159: "snow", 160: "solid-other", 161: "stairs", 162: "stone", 163: "straw",
    164: "structural-other", 165: "table", 166: "tent", 167: "textile-other", 168: "towel",
    169: "tree", 170: "vegetable", 171: "wall-brick", 172: "wall-concrete",
    173: "wall-other", 174: "wall-panel", 175: "wall-stone", 176: "wall-tile",
    177: "wall-wood", 178: "water-other", 179: "waterdrops", 180: "window-blind",
    181: "window-other", 182: "wood",
}
# fmt: on
NUM_THING_IDS = 91  # ids 1..91 are things (80 used)

#: Where each input comes from (named in error messages).
ARCHIVES = {
    "stuffthingmaps": "stuffthingmaps_trainval2017.zip from https://github.com/nightrome/cocostuff",
    "images": "val2017.zip from https://cocodataset.org/#download",
    "annotations": "annotations_trainval2017.zip from https://cocodataset.org/#download",
}


# --------------------------------------------------------------------------------------------
# label tables


def used_stuff_ids() -> list[int]:
    """The 171 COCO-Stuff ids (1-based) that annotations use, increasing."""
    return [i for i, name in sorted(COCO_STUFF_CLASSES.items()) if name is not None]


def stuff_lut() -> np.ndarray:
    """256-entry table: stuffthing map value (id - 1) -> train id 0..170, else 255."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for train_id, cls_id in enumerate(used_stuff_ids()):
        lut[cls_id - 1] = train_id
    return lut


def object_lut_from_stuffthingmaps() -> np.ndarray:
    """SCLIP's table: thing value (id - 1, 0..90 with gaps) -> 1..80, stuff -> 0, else 255."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    things = [i for i in used_stuff_ids() if i <= NUM_THING_IDS]
    for label, cls_id in enumerate(things, start=1):
        lut[cls_id - 1] = label
    for cls_id in used_stuff_ids():
        if cls_id > NUM_THING_IDS:
            lut[cls_id - 1] = 0
    return lut


def check_names(ours: Sequence[str], theirs: Sequence[str], what: str) -> list[str]:
    """Warnings for the positions where two class lists disagree (spaces and case ignored)."""
    out = []
    if len(ours) != len(theirs):
        out.append(f"{what}: {len(ours)} classes here vs {len(theirs)} in the class-name file")
    bad = [
        f"{i}: {a!r} vs {b!r}"
        for i, (a, b) in enumerate(zip(ours, theirs))
        if prepare.loose_name(a) != prepare.loose_name(b.split(";")[0].split(",")[0])
    ]
    if bad:
        out.append(f"{what}: class order differs from the class-name file at " + "; ".join(bad))
    return out


def convert_stuffthingmap(values: np.ndarray) -> np.ndarray:
    """COCO-Stuff stuffthing map (uint8, 0..181 / 255) -> labelTrainIds (0..170 / 255)."""
    return stuff_lut()[values]


def paint_instances(
    anns: Iterable[dict],
    height: int,
    width: int,
    cat_to_label: dict[int, int],
    to_mask: Callable[[dict], np.ndarray],
    crowd: str = "label",
) -> np.ndarray:
    """Merge instance masks into one semantic map.

    Args:
        anns: COCO annotation dicts of one image.
        height: Image height.
        width: Image width.
        cat_to_label: COCO category id -> output label (1..80).
        to_mask: Function annotation -> binary mask ``[H, W]`` (``COCO.annToMask``).
        crowd: ``"label"`` paints crowd regions with their category, ``"ignore"`` with 255.

    Returns:
        ``uint8 [H, W]``: 0 background, labels where masks are; masks are painted by decreasing
        pixel area (ties: lower annotation id first) so smaller objects end on top.
    """
    out = np.zeros((height, width), dtype=np.uint8)
    masks = []
    for ann in anns:
        if ann["category_id"] not in cat_to_label:
            continue
        m = to_mask(ann).astype(bool)
        masks.append((-int(m.sum()), int(ann.get("id", 0)), m, ann))
    masks.sort(key=lambda t: (t[0], t[1]))
    for _, _, m, ann in masks:
        if ann.get("iscrowd", 0) and crowd == "ignore":
            out[m] = IGNORE
        else:
            out[m] = cat_to_label[ann["category_id"]]
    return out


# --------------------------------------------------------------------------------------------
# conversions


SPLITS = ("val2017", "train2017")


def _out_dirs(data_root: Path, split: str = "val2017") -> tuple[Path, Path]:
    base = data_root / "coco_stuff164k"
    return base / "images" / split, base / "annotations" / split


def _link_images(
    job: prepare.Conversion,
    names: Sequence[tuple[str, str]],
    images: Path | None,
    dst_dir: Path,
    mode: str | None,
    split: str = "val2017",
) -> None:
    """Place ``images/<file>`` as ``dst_dir/<id>.jpg`` for each ``(id, file)`` (never replaced).

    With ``mode=None`` only checks that ``dst_dir`` exists, with a warning if not.
    """
    if mode is None:
        if not dst_dir.is_dir():
            job.summary.warn(
                f"no images in {dst_dir}: put the {split} images there "
                f"({_images_archive(split)}) or re-run with --link-images"
            )
        return
    src = prepare.require(images, f"COCO {split} images", _images_archive(split))
    pairs = [(src / fname, dst_dir / f"{stem}.jpg") for stem, fname in names]
    job.place_images(pairs, mode, source=src)


def _images_archive(split: str) -> str:
    return ARCHIVES["images"].replace("val2017", split)


def _stuffthingmap_files(
    stuffthingmaps: Path, images: Path | None, link_images: str | None, split: str = "val2017"
) -> list[Path]:
    """The ``{id}.png`` stuffthing maps, after checking the inputs exist."""
    prepare.require(stuffthingmaps, "COCO-Stuff stuffthing maps", ARCHIVES["stuffthingmaps"])
    if link_images:
        prepare.require(images, f"COCO {split} images", _images_archive(split))
    return prepare.require_files(
        stuffthingmaps.glob("*.png"),
        f"no .png files in '{stuffthingmaps}'; unzip {ARCHIVES['stuffthingmaps']}",
    )


def _convert_stuffthingmaps(
    job: prepare.Conversion,
    files: Sequence[Path],
    convert: Callable[[Path], np.ndarray],
    data_root: Path,
    kind: str,
    desc: str,
    images: Path | None,
    link_images: str | None,
    split: str = "val2017",
) -> None:
    """Write ``annotations/<split>/{id}_<kind>.png`` for each map, then place the images."""
    img_dir, ann_dir = _out_dirs(data_root, split)
    job.convert_files(files, lambda f: ann_dir / f"{f.stem}_{kind}.png", convert, desc=desc)
    names = [(f.stem, f"{f.stem}.jpg") for f in files]
    _link_images(job, names, images, img_dir, link_images, split)


def prepare_stuff(
    stuffthingmaps: Path,
    data_root: Path,
    *,
    images: Path | None = None,
    link_images: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    split: str = "val2017",
) -> prepare.Summary:
    """Write ``coco_stuff164k/annotations/<split>/{id}_labelTrainIds.png`` from stuffthing maps
    (``val2017``: the ``coco_stuff171`` benchmark; ``train2017``: ``coco_stuff171_train``, the
    training split of trained heads).

    Args:
        stuffthingmaps: ``stuffthingmaps_trainval2017/<split>`` (``{id}.png`` files).
        data_root: Output root.
        images: Official ``<split>`` images (used with ``link_images``).
        link_images: ``"symlink"`` or ``"copy"`` to place the images; ``None`` leaves them.
        overwrite: Rewrite existing outputs.
        progress: Show a progress bar.
        split: ``"val2017"`` or ``"train2017"``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    files = _stuffthingmap_files(stuffthingmaps, images, link_images, split)
    job = prepare.Conversion(overwrite=overwrite, progress=progress)
    s = job.summary
    for w in check_names(
        # the names of used_stuff_ids(), in order
        [name for _, name in sorted(COCO_STUFF_CLASSES.items()) if name is not None],
        prepare.read_class_file("cls_coco_stuff.txt"),
        "coco_stuff171",
    ):
        s.warn(w)
    lut = stuff_lut()

    def convert(f: Path) -> np.ndarray:
        values = prepare.read_uint8_map(f)
        unknown = np.setdiff1d(np.unique(values), np.flatnonzero(lut != IGNORE))
        unknown = unknown[unknown != IGNORE]
        if unknown.size:
            s.warn(f"{f.name}: unused class values {unknown.tolist()} -> 255")
        return lut[values]

    _convert_stuffthingmaps(
        job,
        files,
        convert,
        data_root,
        "labelTrainIds",
        "coco_stuff171" if split == "val2017" else "coco_stuff171_train",
        images,
        link_images,
        split,
    )
    return s


def prepare_object(
    annotations: Path,
    data_root: Path,
    *,
    images: Path | None = None,
    link_images: str | None = None,
    crowd: str = "label",
    overwrite: bool = False,
    progress: bool = True,
) -> prepare.Summary:
    """Write ``coco_stuff164k/annotations/val2017/{id}_instanceTrainIds.png`` from instances.

    Args:
        annotations: ``annotations/instances_val2017.json``.
        data_root: Output root.
        images: Official ``val2017`` images (used with ``link_images``).
        link_images: ``"symlink"`` or ``"copy"`` to place the images; ``None`` leaves them.
        crowd: ``"label"`` (default, as COCO-Stuff) or ``"ignore"`` (255) for crowd regions.
        overwrite: Rewrite existing outputs.
        progress: Show a progress bar.
    """
    prepare.require(annotations, "COCO instances annotation", ARCHIVES["annotations"], is_dir=False)
    if link_images:
        prepare.require(images, "COCO val2017 images", ARCHIVES["images"])
    try:
        from pycocotools.coco import COCO
    except ImportError as err:  # pragma: no cover - pycocotools is a dependency
        raise prepare.InputError("pycocotools is needed: pip install pycocotools") from err
    try:
        coco = COCO(str(annotations))
    except (OSError, ValueError, KeyError) as err:
        raise prepare.InputError(f"cannot read '{annotations}': {err}") from err
    job = prepare.Conversion(overwrite=overwrite, progress=progress)
    cat_ids = sorted(coco.getCatIds())
    cat_to_label = {c: i for i, c in enumerate(cat_ids, start=1)}
    if len(cat_ids) > 254:
        raise prepare.InputError(f"{annotations} has {len(cat_ids)} categories; at most 254 fit")
    for w in check_names(
        [coco.cats[c]["name"] for c in cat_ids],
        prepare.read_class_file("cls_coco_object.txt")[1:],
        "coco_object",
    ):
        job.summary.warn(w)
    img_dir, ann_dir = _out_dirs(data_root)
    img_ids = sorted(coco.getImgIds())
    names = [(Path(coco.imgs[i]["file_name"]).stem, coco.imgs[i]["file_name"]) for i in img_ids]
    stems = {i: stem for i, (stem, _) in zip(img_ids, names)}

    def output(img_id: int) -> Path:
        return ann_dir / f"{stems[img_id]}_instanceTrainIds.png"

    def convert(img_id: int) -> np.ndarray:
        info = coco.imgs[img_id]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id], iscrowd=None))
        return paint_instances(
            anns, info["height"], info["width"], cat_to_label, coco.annToMask, crowd
        )

    job.convert_files(img_ids, output, convert, desc="coco_object", unit="img")
    _link_images(job, names, images, img_dir, link_images)
    return job.summary


def prepare_object_from_stuffthingmaps(
    stuffthingmaps: Path,
    data_root: Path,
    *,
    images: Path | None = None,
    link_images: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> prepare.Summary:
    """SCLIP's COCO-Object conversion: stuffthing maps -> ``{id}_instanceTrainIds.png``.

    Thing values (COCO id - 1, 0..89 with gaps) -> 1..80, stuff values (91..181) -> 0,
    255 -> 255. Arguments as :func:`prepare_stuff`.
    """
    files = _stuffthingmap_files(stuffthingmaps, images, link_images)
    job = prepare.Conversion(overwrite=overwrite, progress=progress)
    lut = object_lut_from_stuffthingmaps()
    _convert_stuffthingmaps(
        job,
        files,
        lambda f: lut[prepare.read_uint8_map(f)],
        data_root,
        "instanceTrainIds",
        "coco_object",
        images,
        link_images,
    )
    return job.summary


# --------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = prepare.make_parser(__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--coco-root",
        default=".",
        help="folder where the official archives were unzipped (default: current folder)",
    )
    prepare.add_data_root_argument(common)
    common.add_argument(
        "--images",
        default=None,
        help="official val2017 image folder (default: <coco-root>/val2017)",
    )
    common.add_argument(
        "--stuffthingmaps",
        default=None,
        help="stuffthing maps (default: <coco-root>/stuffthingmaps_trainval2017/val2017)",
    )
    prepare.add_link_images_argument(
        common, "symlink (default) or copy the images to coco_stuff164k/images/val2017"
    )
    prepare.add_overwrite_argument(common)
    stuff = sub.add_parser("stuff", parents=[common], help="coco_stuff171 labelTrainIds")
    stuff.add_argument(
        "--split",
        choices=SPLITS,
        default="val2017",
        help="val2017 (coco_stuff171, default) or train2017 (coco_stuff171_train, for training "
        "heads); --images and --stuffthingmaps then default to that split's folders",
    )
    obj = sub.add_parser("object", parents=[common], help="coco_object instanceTrainIds")
    obj.add_argument(
        "--annotations",
        default=None,
        help="instances JSON (default: <coco-root>/annotations/instances_val2017.json)",
    )
    obj.add_argument(
        "--crowd",
        choices=("label", "ignore"),
        default="label",
        help="paint crowd regions with their category (default) or 255",
    )
    obj.add_argument(
        "--from-stuffthingmaps",
        action="store_true",
        help="SCLIP's conversion from the stuffthing maps instead of the instances JSON",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; 0 on success, 1 if some files failed, 2 on a missing input."""
    args = parse_args(argv)
    root = Path(args.coco_root).expanduser()
    split = getattr(args, "split", "val2017")
    images = prepare.path_arg(args.images, root / split)
    stm = prepare.path_arg(args.stuffthingmaps, root / "stuffthingmaps_trainval2017" / split)
    if args.command == "stuff":
        title = "coco_stuff171" if split == "val2017" else "coco_stuff171_train"
    elif args.from_stuffthingmaps:
        title = "coco_object (from stuffthing maps)"
    else:
        title = "coco_object"

    def run() -> prepare.Summary:
        data_root = prepare.resolve_output_root(args.data_root)
        kw = dict(images=images, link_images=args.link_images, overwrite=args.overwrite)
        if args.command == "stuff":
            return prepare_stuff(stm, data_root, split=split, **kw)
        if args.from_stuffthingmaps:
            return prepare_object_from_stuffthingmaps(stm, data_root, **kw)
        ann = prepare.path_arg(args.annotations, root / "annotations" / "instances_val2017.json")
        return prepare_object(ann, data_root, crowd=args.crowd, **kw)

    return prepare.run_conversion(title, run)


if __name__ == "__main__":
    sys.exit(main())
