"""ovdense's detection sets in detectron2's ``DatasetCatalog`` / ``MetadataCatalog``.

Registered on import of :mod:`ovdense.integrations.detectron2` (files are read, or generated,
only when a set is first loaded):

==========================  ===============================================================
name                        what
==========================  ===============================================================
ovdense_shapes_det_train    the shapes world's training distribution, 1600 scenes at 128 px
                            (generated once under the data root, held-out compositions never
                            drawn); the 24 seen compositions are the vocabulary
ovdense_shapes_det_val      the catalog's ``shapes_det`` (200 scenes); all 30 compositions,
                            the held-out ones novel
ovdense_coco_ov_train       OV-COCO train: ``coco/zero-shot/instances_train2017_seen_2_65_cat
                            .json`` (F-ViT's) or ``coco/annotations/instances_train2017.json``,
                            images ``coco/train2017``; the 48 base classes
ovdense_coco_ov_val         OV-COCO val: ``coco/zero-shot/instances_val2017_all_2.json`` or
                            ``coco/annotations/instances_val2017.json``, images
                            ``coco/val2017``; 65 classes, 48 base + 17 novel
==========================  ===============================================================

The data root is ``$OVDENSE_DATASETS`` (generated sets: ``~/.cache/ovdense/datasets`` without
it). Records are read by ovdense's :class:`~ovdense.data.detection.CocoDetection` (crowd and
degenerate boxes, and categories outside the vocabulary, left out: the novel classes never
become training targets); ``category_id`` indexes ``thing_classes``. Metadata:
``thing_classes``, ``base_classes``, ``novel_classes``, ``json_file``, ``image_root``,
``evaluator_type="ovdense_coco"``; ``thing_dataset_id_to_contiguous_id`` once loaded (as
detectron2's ``load_coco_json`` sets it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ...data import get_instances_files, synthetic
from ...data.detection import CocoDetection
from ...data.ov_splits import COCO_OV_BASE, COCO_OV_NOVEL, coco_ov_classes
from ...data.roots import materialize, resolve_data_root

__all__ = [
    "BUILTIN_DATASETS",
    "SHAPES_TRAIN_IMAGES",
    "coco_detection_dicts",
    "register_ov_coco_instances",
    "register_ovdense_datasets",
]

#: Scenes in ``ovdense_shapes_det_train`` (400 iterations of 4 images, ``fvit_shapes.py``).
SHAPES_TRAIN_IMAGES = 1600

#: The names :func:`register_ovdense_datasets` registers.
BUILTIN_DATASETS = (
    "ovdense_shapes_det_train",
    "ovdense_shapes_det_val",
    "ovdense_coco_ov_train",
    "ovdense_coco_ov_val",
)


def coco_detection_dicts(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    classes: Sequence[str] | None = None,
    dataset_name: str | None = None,
) -> list[dict[str, Any]]:
    """A COCO instances JSON as detectron2 dataset dicts (``file_name``, ``height``,
    ``width``, ``image_id``, ``annotations``: ``bbox`` XYXY pixels, ``bbox_mode``,
    ``category_id`` indexing ``classes``).

    ``classes``: the vocabulary (category names; default every category in id order).
    With ``dataset_name``, its metadata gets ``thing_dataset_id_to_contiguous_id``.
    """
    data = CocoDetection(json_file, image_root, classes=classes, keep_empty=True)
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(
            thing_dataset_id_to_contiguous_id=dict(sorted(data.cat_to_label.items()))
        )
    root = Path(image_root)
    out = []
    for image_id, file_name, boxes, labels in data.records:
        info = data.coco.imgs[image_id]
        out.append(
            {
                "file_name": str(root / file_name),
                "height": int(info["height"]),
                "width": int(info["width"]),
                "image_id": image_id,
                "annotations": [
                    {
                        "bbox": [float(v) for v in box],
                        "bbox_mode": BoxMode.XYXY_ABS,
                        "category_id": int(label),
                        "iscrowd": 0,
                    }
                    for box, label in zip(boxes.tolist(), labels.tolist())
                ],
            }
        )
    return out


def register_ov_coco_instances(
    name: str,
    files: Callable[[], tuple[Path, Path]] | tuple[str | os.PathLike, str | os.PathLike],
    classes: Sequence[str],
    base_classes: Sequence[str] | None = None,
    novel_classes: Sequence[str] = (),
) -> None:
    """Register a COCO-format detection set under ``name``.

    Args:
        files: ``(json_file, image_root)``, or a function returning them (called when the set
            is first loaded: paths under a data root resolved late, generated sets).
        classes: the vocabulary (category names of the JSON); ``category_id`` indexes it.
        base_classes: the classes trained on (default: all of ``classes``).
        novel_classes: the classes only evaluated.

    Raises:
        ValueError: a base / novel class outside ``classes``.
    """
    classes = list(classes)
    base = list(classes) if base_classes is None else list(base_classes)
    bad = [c for c in [*base, *novel_classes] if c not in classes]
    if bad:
        raise ValueError(f"Dataset {name!r}: base / novel classes not in its classes: {bad}.")
    meta = MetadataCatalog.get(name)

    def paths() -> tuple[Path, Path]:
        json_file, image_root = files() if callable(files) else files
        meta.set(json_file=str(json_file), image_root=str(image_root))
        return Path(json_file), Path(image_root)

    def load() -> list[dict[str, Any]]:
        json_file, image_root = paths()
        return coco_detection_dicts(json_file, image_root, classes, dataset_name=name)

    DatasetCatalog.register(name, load)
    meta.set(
        thing_classes=classes,
        base_classes=base,
        novel_classes=list(novel_classes),
        evaluator_type="ovdense_coco",
    )
    if not callable(files):
        paths()


def _first_existing(root_rel: Sequence[str], what: str) -> Path:
    root = resolve_data_root(None)
    for rel in root_rel:
        if (root / rel).exists():
            return root / rel
    raise FileNotFoundError(
        f"{what}: none of {[str(root / r) for r in root_rel]} exists. See datasets/README.md."
    )


def _coco_ov_files(split: str) -> Callable[[], tuple[Path, Path]]:
    jsons = {
        "train": (
            "coco/zero-shot/instances_train2017_seen_2_65_cat.json",
            "coco/annotations/instances_train2017.json",
        ),
        "val": (
            "coco/zero-shot/instances_val2017_all_2.json",
            "coco/annotations/instances_val2017.json",
        ),
    }[split]

    def files() -> tuple[Path, Path]:
        return (
            _first_existing(jsons, f"OV-COCO {split} annotations"),
            _first_existing([f"coco/{split}2017"], f"COCO {split}2017 images"),
        )

    return files


def _shapes_train_files() -> tuple[Path, Path]:
    root = os.environ.get("OVDENSE_DATASETS") or None
    folder = materialize(
        "ovdense_shapes_det_train",
        "shapes/det_train",
        lambda f: synthetic.write_shapes_det(
            f, SHAPES_TRAIN_IMAGES, seed=0, size=synthetic.VAL_SIZE, split="train"
        ),
        root,
    )
    return folder / "instances.json", folder / "images"


def _shapes_groups() -> tuple[list[str], list[str], list[str]]:
    names = synthetic.class_names()
    groups = synthetic.class_groups()
    return (
        names[1:],
        [names[i] for i in groups["seen"]],
        [names[i] for i in groups["held_out"]],
    )


def register_ovdense_datasets() -> None:
    """Register :data:`BUILTIN_DATASETS` (names already in the catalog are left as they are)."""
    registered = set(DatasetCatalog.list())
    everything, seen, held = _shapes_groups()
    entries: list[tuple[str, Any, list[str], list[str], list[str]]] = [
        ("ovdense_shapes_det_train", _shapes_train_files, seen, seen, []),
        (
            "ovdense_shapes_det_val",
            lambda: get_instances_files("shapes_det", os.environ.get("OVDENSE_DATASETS") or None),
            everything,
            seen,
            held,
        ),
        (
            "ovdense_coco_ov_train",
            _coco_ov_files("train"),
            list(COCO_OV_BASE),
            list(COCO_OV_BASE),
            [],
        ),
        (
            "ovdense_coco_ov_val",
            _coco_ov_files("val"),
            coco_ov_classes(),
            list(COCO_OV_BASE),
            list(COCO_OV_NOVEL),
        ),
    ]
    for name, files, classes, base, novel in entries:
        if name not in registered:
            register_ov_coco_instances(name, files, classes, base, novel)
