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

    ovdense prepare pascal_context --context-root ~/downloads/pascal_context \\
        --split-file ~/downloads/pascal_context/val.txt --data-root ~/datasets

(also ``python -m ovdense.data.converters.pascal_context ...`` or
``python tools/prepare_pascal_context.py ...``)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...utils.io import atomic_write_text
from .. import prepare

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
# label tables


def read_labels_txt(path: Path) -> dict[int, str]:
    """Parse the official ``labels.txt`` ("index: name" per line) into ``{index: name}``."""
    out: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        idx, sep, name = line.partition(":")
        if not sep or not idx.strip().isdigit():
            raise prepare.InputError(f"{path}:{n}: expected 'index: name', got {line!r}")
        out[int(idx)] = name.strip()
    if not out:
        raise prepare.InputError(f"'{path}' lists no classes")
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
    unmatched: list[str] = []
    for k, line in enumerate(names59, start=1):
        found = by_name.get(first_name(line))
        if found is None:
            unmatched.append(first_name(line))
        else:
            lut[found] = k
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
) -> prepare.Summary:
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
    prepare.require(mat_dir, "PASCAL-Context annotation (.mat)", ARCHIVES["context"])
    prepare.require(labels_txt, "PASCAL-Context labels.txt", ARCHIVES["context"], is_dir=False)
    if split_file is not None:
        prepare.require(
            split_file, "split", "mmseg's PASCAL-Context val.txt (5105 ids)", is_dir=False
        )
    if link_images:
        prepare.require(images, "VOC2010 JPEGImages", ARCHIVES["voc2010"])
    bad = set(outputs) - {"60", "459"}
    if bad or not outputs:
        raise prepare.InputError(f"outputs must be '60' and/or '459', got {list(outputs)}")
    labels = read_labels_txt(labels_txt)
    job = prepare.Conversion(overwrite=overwrite, progress=progress)
    s = job.summary
    names459 = prepare.read_class_file("cls_context459.txt")
    ours = [labels.get(i, "") for i in range(1, NUM_CLASSES_459 + 1)]
    diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(ours, names459)) if a != b]
    if len(labels) != NUM_CLASSES_459 or diff:
        s.warn(
            f"{labels_txt} has {len(labels)} classes; {len(diff)} differ from "
            f"cls_context459.txt: " + "; ".join(diff[:5])
        )
    lut, unmatched = context59_lut(labels, prepare.read_class_file("cls_context59.txt"))
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
        raise prepare.InputError(f"no ids: '{mat_dir}' has no .mat files ({ARCHIVES['context']})")
    base = data_root / "VOCdevkit" / "VOC2010"
    dst60, dst459 = base / "SegmentationClassContext", base / "SegmentationClassContext459"
    has_mat = {i: (mat_dir / f"{i}.mat").is_file() for i in ids}
    missing = [i for i in ids if not has_mat[i]]

    def targets(i: str) -> dict[str, Path]:
        return {k: (dst60 if k == "60" else dst459) / f"{i}.png" for k in outputs}

    def convert(i: str, todo: Sequence[str]) -> dict[str, np.ndarray]:
        src = mat_dir / f"{i}.mat"
        try:
            lab = load_label_map(src)
        except ValueError as err:
            raise prepare.ConversionError(str(err)) from err
        if lab.size and int(lab.max()) > NUM_CLASSES_459:
            s.warn(f"{src.name}: values above {NUM_CLASSES_459} -> unlabeled")
        return {k: convert_60(lab, lut) if k == "60" else convert_459(lab) for k in todo}

    done: list[str] = []  # the ids converted or already present, in order
    job.convert_each(
        [i for i in ids if has_mat[i]], targets, convert, desc="pascal_context", after=done.append
    )
    if missing:
        s.warn(f"{len(missing)} id(s) of the split have no .mat file, e.g. {missing[0]}")

    split_out = base / "ImageSets" / "SegmentationContext" / "val.txt"
    text = "".join(f"{i}\n" for i in done)
    if split_out.exists() and not overwrite:
        s.skipped += 1
        if split_out.read_text(encoding="utf-8") != text:
            s.warn(f"{split_out} exists and differs from the converted ids (--overwrite)")
    elif done:
        atomic_write_text(split_out, text)
        s.written += 1

    jpeg = base / "JPEGImages"
    if link_images:
        src = prepare.require(images, "VOC2010 JPEGImages", ARCHIVES["voc2010"])
        pairs = [(src / f"{i}.jpg", jpeg / f"{i}.jpg") for i in done]
        job.place_images(pairs, link_images, source=src)
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
    p = prepare.make_parser(__doc__)
    p.add_argument(
        "--context-root",
        default=".",
        help="where trainval.tar.gz was extracted (trainval/*.mat, labels.txt; default: .)",
    )
    p.add_argument("--mat-dir", default=None, help="folder of {id}.mat (default: <root>/trainval)")
    p.add_argument("--labels", default=None, help="labels.txt (default: <root>/labels.txt)")
    p.add_argument("--split-file", default=None, help="ids to convert (default: all .mat files)")
    prepare.add_data_root_argument(p)
    p.add_argument(
        "--outputs",
        nargs="+",
        choices=("60", "459"),
        default=["60", "459"],
        help="which label sets to write (default: both)",
    )
    p.add_argument("--images", default=None, help="VOC2010 JPEGImages folder to link from")
    prepare.add_link_images_argument(
        p, "symlink (default) or copy --images into VOCdevkit/VOC2010/JPEGImages"
    )
    prepare.add_overwrite_argument(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; 0 on success, 1 if some files failed, 2 on a missing input."""
    args = parse_args(argv)
    root = Path(args.context_root).expanduser()

    def run() -> prepare.Summary:
        if args.link_images and not args.images:
            raise prepare.InputError("--link-images needs --images <VOCdevkit/VOC2010/JPEGImages>")
        return prepare_pascal_context(
            prepare.path_arg(args.mat_dir, root / "trainval"),
            prepare.path_arg(args.labels, root / "labels.txt"),
            prepare.resolve_output_root(args.data_root),
            split_file=prepare.path_arg(args.split_file),
            outputs=args.outputs,
            images=prepare.path_arg(args.images),
            link_images=args.link_images,
            overwrite=args.overwrite,
        )

    return prepare.run_conversion("pascal_context", run)


if __name__ == "__main__":
    sys.exit(main())
