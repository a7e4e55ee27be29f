"""Detection training / evaluation data: COCO-format sets and the shapes world, as images with
``boxes`` / ``labels`` targets indexed by a vocabulary.

Items are dicts ``{"image": float [3, H, W] in [0, 1], "targets": {"boxes": [M, 4] XYXY
pixels, "labels": [M] int64 indices into the vocabulary (, "masks": [M, H, W] uint8)},
"image_id": int}``;
:func:`detection_collate` batches them as lists (``{"images", "targets", "image_ids"}``).

What is left out of the targets, and counted in one warning per dataset: crowd annotations,
degenerate boxes (width or height under 1 pixel, or no overlap with the image, as F-ViT's
loader) and annotations whose category is not in the vocabulary (for an open-vocabulary
split: the novel classes never become training targets).
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import synthetic
from .coco import load_coco_instances
from .ov_splits import check_no_novel_targets

__all__ = ["CocoDetection", "ShapesDetection", "detection_collate", "image_file_name"]


def detection_collate(items: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """A batch of detection items as lists: ``{"images", "targets", "image_ids"}``."""
    return {
        "images": [it["image"] for it in items],
        "targets": [it["targets"] for it in items],
        "image_ids": [it["image_id"] for it in items],
    }


def image_file_name(img: Mapping[str, Any]) -> str:
    """An image's path relative to the image folder: COCO's ``file_name``, or for LVIS v1 (whose
    images have only a ``coco_url``) the URL's last two parts, ``train2017/<id>.jpg`` or
    ``val2017/<id>.jpg`` (mmdet's ``LVISV1Dataset`` rule; the folder holds COCO's
    ``train2017/`` and ``val2017/``)."""
    if "file_name" in img:
        return str(img["file_name"])
    url = img.get("coco_url")
    if not url:
        raise ValueError(f"Image {img.get('id')} has neither 'file_name' nor 'coco_url'.")
    return "/".join(str(url).rstrip("/").split("/")[-2:])


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format instances JSON + image folder as detection items (LVIS v1 files too).

    Args:
        json_path: the instances JSON.
        image_dir: the image folder (``file_name`` is relative to it).
        classes: the vocabulary: category *names*; labels index this list. Default: every
            category of the JSON, in id order. Annotations of other categories are left out
            (counted in a warning); for OV-COCO training pass
            :data:`~ovdense.data.ov_splits.COCO_OV_BASE`.
        limit: keep only the first ``limit`` images (JSON order).
        keep_empty: keep images without any target (background-only images).
        with_masks: add ``masks`` ``[M, H, W]`` uint8 to the targets (decoded from the
            annotations' polygons / RLE; for a detector with a mask head).
        novel_classes: the split's novel classes (OV-COCO's 17, OV-LVIS's 337 rare ones): a
            vocabulary holding one is refused, and every target is checked not to be one.

    Attributes:
        classes: the vocabulary.
        skipped: ``Counter`` of left-out annotations by reason (``"crowd"``, ``"degenerate"``,
            ``"not_in_vocabulary"``).
        skipped_category_ids: category ids left out because they are not in the vocabulary.
        coco: the ``pycocotools.coco.COCO`` index of the JSON (for evaluation).
    """

    def __init__(
        self,
        json_path: str | os.PathLike,
        image_dir: str | os.PathLike,
        classes: Sequence[str] | None = None,
        limit: int | None = None,
        keep_empty: bool = True,
        with_masks: bool = False,
        novel_classes: Sequence[str] | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.with_masks = bool(with_masks)
        self.coco = load_coco_instances(json_path)
        data = self.coco.dataset
        cats = sorted(data["categories"], key=lambda c: int(c["id"]))
        self.classes = [str(c["name"]) for c in cats] if classes is None else list(classes)
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes has duplicated names.")
        novel = set(novel_classes or ())
        check_no_novel_targets(self.classes, novel)
        index = {n: i for i, n in enumerate(self.classes)}
        self.cat_to_label = {int(c["id"]): index[c["name"]] for c in cats if c["name"] in index}
        self.skipped: Counter[str] = Counter()
        self.skipped_category_ids: set[int] = set()
        self.records: list[tuple[int, str, Tensor, Tensor]] = []
        self._ann_ids: dict[int, list[int]] = {}
        for img in data["images"][:limit]:
            boxes, labels = self._parse(img, self.coco.imgToAnns.get(int(img["id"]), []))
            if keep_empty or len(labels):
                self.records.append((int(img["id"]), image_file_name(img), boxes, labels))
        if novel:
            hit = {self.classes[int(k)] for r in self.records for k in r[3]} & novel
            assert not hit, f"novel classes among the training targets: {sorted(hit)}"
        _warn_skipped(f"'{Path(json_path).name}'", self.skipped, self.skipped_category_ids)

    def _parse(self, img: dict[str, Any], anns: list[dict[str, Any]]) -> tuple[Tensor, Tensor]:
        boxes, labels = [], []
        width, height = float(img["width"]), float(img["height"])
        for ann in anns:
            if ann.get("iscrowd", 0) or ann.get("ignore", False):
                self.skipped["crowd"] += 1
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            inter_w = max(0.0, min(x + w, width) - max(x, 0.0))
            inter_h = max(0.0, min(y + h, height) - max(y, 0.0))
            if w < 1 or h < 1 or inter_w * inter_h == 0:
                self.skipped["degenerate"] += 1
                continue
            cat = int(ann["category_id"])
            if cat not in self.cat_to_label:
                self.skipped["not_in_vocabulary"] += 1
                self.skipped_category_ids.add(cat)
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(self.cat_to_label[cat])
            self._ann_ids.setdefault(int(img["id"]), []).append(int(ann["id"]))
        return (
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor(labels, dtype=torch.int64),
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image_id, file_name, boxes, labels = self.records[i]
        with Image.open(self.image_dir / file_name) as im:
            arr = np.asarray(im.convert("RGB"))
        image = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
        targets = {"boxes": boxes.clone(), "labels": labels.clone()}
        if self.with_masks:
            h, w = arr.shape[:2]
            anns = self.coco.loadAnns(self._ann_ids.get(image_id, []))
            masks = [self.coco.annToMask(a) for a in anns]
            targets["masks"] = (
                torch.from_numpy(np.stack(masks)).to(torch.uint8)
                if masks
                else torch.zeros(0, h, w, dtype=torch.uint8)
            )
        return {"image": image, "targets": targets, "image_id": image_id}


def _warn_skipped(what: str, skipped: Counter[str], cat_ids: set[int]) -> None:
    if not sum(skipped.values()):
        return
    parts = []
    if skipped["not_in_vocabulary"]:
        parts.append(
            f"{skipped['not_in_vocabulary']} of categories not in the vocabulary "
            f"(ids {sorted(cat_ids)})"
        )
    if skipped["degenerate"]:
        parts.append(f"{skipped['degenerate']} with degenerate boxes (under 1 px or outside)")
    if skipped["crowd"]:
        parts.append(f"{skipped['crowd']} crowd / ignored")
    warnings.warn(
        f"{what}: {sum(skipped.values())} annotations left out of the targets: "
        + "; ".join(parts)
        + ".",
        stacklevel=3,
    )


class ShapesDetection(torch.utils.data.Dataset):
    """Shapes-world scenes generated on the fly as detection items (the offline analogue of
    OV-COCO: train on the seen colour-shape compositions, evaluate on ``shapes_det``).

    Args:
        length: number of scenes (scene ``i`` is ``generate_scene(seed, i, size, split)``).
        seed: world seed (the ``shapes_det`` val set uses
            :data:`~ovdense.data.synthetic.VAL_SEED`).
        size: image side in pixels.
        split: ``"train"`` (held-out compositions are never drawn) or ``"val"``.
        classes: the vocabulary (default: the seen compositions,
            :func:`~ovdense.data.synthetic.class_groups` ``"seen"``). Objects of other classes
            are left out (counted in a warning).
        max_objects: objects per scene, at most.
    """

    def __init__(
        self,
        length: int,
        seed: int = 0,
        size: int = synthetic.VAL_SIZE,
        split: str = "train",
        classes: Sequence[str] | None = None,
        max_objects: int = 5,
    ) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}.")
        names = synthetic.class_names()
        if classes is None:
            classes = [names[i] for i in synthetic.class_groups()["seen"]]
        self.classes = list(classes)
        unknown = [c for c in self.classes if c not in names[1:]]
        if unknown:
            raise ValueError(f"Unknown shapes-world classes {unknown}.")
        self.length, self.seed, self.size = int(length), int(seed), int(size)
        self.split, self.max_objects = split, int(max_objects)
        self._label = {names.index(c): i for i, c in enumerate(self.classes)}
        self.skipped: Counter[str] = Counter()
        self._warned = False

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} scenes.")
        scene = synthetic.generate_scene(self.seed, i, self.size, self.split, self.max_objects)
        keep = [k for k, c in enumerate(scene.labels) if int(c) in self._label]
        if len(keep) < len(scene.labels):
            self.skipped["not_in_vocabulary"] += len(scene.labels) - len(keep)
            if not self._warned:
                self._warned = True
                warnings.warn(
                    "shapes scenes hold objects of classes outside the vocabulary; they are "
                    "left out of the targets (counted in .skipped).",
                    stacklevel=2,
                )
        image = torch.from_numpy(scene.image).permute(2, 0, 1).float().div_(255.0)
        return {
            "image": image,
            "targets": {
                "boxes": torch.from_numpy(scene.boxes[keep]).float().reshape(-1, 4),
                "labels": torch.tensor(
                    [self._label[int(scene.labels[k])] for k in keep], dtype=torch.int64
                ),
            },
            "image_id": i,
        }
