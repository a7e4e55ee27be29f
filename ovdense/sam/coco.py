"""COCO-style results of open-vocabulary instances: RLE masks, categories, one JSON per image.

* :func:`encode_rle` / :func:`decode_rle`: one ``[H, W]`` bool mask <-> COCO's compressed RLE
  ``{"size": [H, W], "counts": str}`` (``pycocotools.mask.encode`` on a Fortran-ordered uint8
  array; the counts bytes decoded to ``str`` so that the record is JSON).
* :func:`coco_categories`: the vocabulary as COCO categories, ``id = class index + 1`` (COCO ids
  start at 1), the background class left out.
* :func:`instances_to_coco`: the instances in COCO's *results* format (what
  ``COCO.loadRes`` reads): ``image_id``, ``category_id``, ``segmentation`` (RLE), ``score``,
  ``bbox`` ``[x, y, w, h]`` and ``area``.
* :func:`instances_document`: the demo's per-image / per-frame JSON: the image, its size, the
  classes, the COCO categories, each class's area (fraction of the image its instances cover)
  and the instances with their RLE masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..vocabulary import Vocabulary
from .instances import Instances

__all__ = [
    "coco_categories",
    "decode_rle",
    "encode_rle",
    "instances_document",
    "instances_to_coco",
]


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of one ``[H, W]`` bool (or 0/1) mask: ``{"size": [H, W],
    "counts": str}``."""
    from pycocotools import mask as mask_utils

    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"encode_rle takes one [H, W] mask, got shape {m.shape}.")
    rle = mask_utils.encode(np.asfortranarray((m != 0).astype(np.uint8)))
    counts = rle["counts"]
    return {
        "size": [int(v) for v in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """``[H, W]`` bool mask of a COCO RLE (``counts`` as ``str`` or ``bytes``)."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    record = {
        "size": list(rle["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }
    return mask_utils.decode(record).astype(bool)


def coco_categories(
    vocabulary: Vocabulary, background_index: int | None = None
) -> list[dict[str, Any]]:
    """COCO categories of a vocabulary: ``{"id": index + 1, "name": display name,
    "synonyms": [all names]}`` per class, the background class left out (default: the
    vocabulary's class named background, if any)."""
    bg = vocabulary.background_index if background_index is None else background_index
    return [
        {"id": i + 1, "name": name, "synonyms": list(vocabulary.classes[i])}
        for i, name in enumerate(vocabulary.display_names)
        if i != bg
    ]


def instances_to_coco(instances: Instances, image_id: int | str = 0) -> list[dict[str, Any]]:
    """The instances in COCO's results format, one record per instance (by decreasing score):
    ``image_id``, ``category_id`` (class index + 1), ``category_name``, ``segmentation``
    (compressed RLE, counts as ``str``), ``score``, ``bbox`` ``[x, y, w, h]`` (pixels,
    the mask's extent), ``area`` (pixels), ``class_prob`` and ``sam_iou``.

    ``pycocotools``' ``COCO.loadRes`` reads these records (the masks decode identically) but,
    since they carry a ``bbox``, it overwrites ``area`` with the box area ``w * h``.
    """
    out = []
    for k in range(len(instances)):
        x1, y1, x2, y2 = (float(v) for v in instances.boxes[k])
        label = int(instances.labels[k])
        out.append(
            {
                "image_id": image_id,
                "category_id": label + 1,
                "category_name": instances.classes[label],
                "segmentation": encode_rle(instances.masks[k]),
                "score": round(float(instances.scores[k]), 6),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": int(instances.masks[k].sum()),
                "class_prob": round(float(instances.class_probs[k]), 6),
                "sam_iou": round(float(instances.sam_iou[k]), 6),
            }
        )
    return out


def instances_document(
    instances: Instances, image: str | None = None, image_id: int | str = 0, **extra: Any
) -> dict[str, Any]:
    """One image's (or frame's) JSON document.

    Returns:
        ``{"image", "image_id", "height", "width", "classes", "categories", "present",
        "instances", **extra}``: ``present`` maps each class with instances to the fraction of
        the image they cover (largest first); ``instances`` is :func:`instances_to_coco`.
    """
    h, w = instances.image_size
    return {
        "image": image,
        "image_id": image_id,
        "height": h,
        "width": w,
        "classes": list(instances.classes),
        "categories": coco_categories(instances.vocabulary, instances.background_index),
        "present": {k: round(v, 5) for k, v in instances.class_areas().items()},
        **extra,
        "instances": instances_to_coco(instances, image_id),
    }
