"""COCO-style box evaluation through pycocotools, with open-vocabulary class groups.

:class:`COCODetectionEvaluator` collects detections (boxes in the original image's pixels,
labels indexing the evaluation vocabulary) and runs ``COCOeval`` ("bbox"). Beside COCO's 12
numbers it reports, as F-ViT's ``CocoDatasetOV.evaluate``: the AP50 of each class (precision at
IoU 0.5, all areas, 100 detections, averaged over recall, classes without ground truth left
out) and their means over the groups (``AP50_novel``, ``AP50_base``, ``AP50_all``).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .base import DatasetEvaluator

__all__ = ["COCODetectionEvaluator", "COCO_STAT_NAMES", "coco_results"]

#: Names of ``COCOeval.stats`` (bbox), in order.
COCO_STAT_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip


class COCODetectionEvaluator(DatasetEvaluator):
    """Box AP of detections against a COCO ground truth, per class group.

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` ground truth (e.g. ``CocoDetection(...).coco``).
        classes: the evaluation vocabulary: category names; detection label ``k`` is the
            category named ``classes[k]``. Every name must be a category of ``coco_gt``.
        groups: ``{group: [class names]}``, e.g. ``{"base": COCO_OV_BASE, "novel":
            COCO_OV_NOVEL}``; ``AP50_<group>`` is the mean AP50 of the group's classes.

    ``process(image_ids, outputs)`` takes the image ids and one dict per image with ``boxes``
    ``[M, 4]`` XYXY, ``scores`` ``[M]`` and ``labels`` ``[M]``. Only the processed images are
    evaluated, over every category of ``classes``.
    """

    def __init__(
        self,
        coco_gt: Any,
        classes: Sequence[str],
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.coco_gt = coco_gt
        by_name = {c["name"]: int(c["id"]) for c in coco_gt.dataset["categories"]}
        missing = [n for n in classes if n not in by_name]
        if missing:
            raise ValueError(f"classes not among the ground truth's categories: {missing}.")
        self.classes = list(classes)
        self.cat_ids = [by_name[n] for n in self.classes]
        self.groups: dict[str, list[int]] = {}
        for g, names in (groups or {}).items():
            bad = [n for n in names if n not in self.classes]
            if bad:
                raise ValueError(f"group {g!r} names classes outside the vocabulary: {bad}.")
            self.groups[str(g)] = [by_name[n] for n in names]
        self.reset()

    def reset(self) -> None:
        self._results: list[dict[str, Any]] = []
        self._image_ids: list[int] = []

    def process(self, inputs: Sequence[int], outputs: Sequence[Mapping[str, torch.Tensor]]) -> None:
        if len(inputs) != len(outputs):
            raise ValueError(f"{len(inputs)} image ids but {len(outputs)} outputs.")
        for image_id, out in zip(inputs, outputs, strict=True):
            self._image_ids.append(int(image_id))
            self._results.extend(coco_results(int(image_id), out, self.cat_ids))

    def evaluate(self) -> dict[str, Any]:
        """``{"bbox": {AP, AP50, ..., AR100, ..., AP50_<group>..., AP50_all,
        per_class_AP50: {name: value}}}`` in percent (NaN: nothing to measure)."""
        from pycocotools.cocoeval import COCOeval

        stats = {name: float("nan") for name in COCO_STAT_NAMES}
        per_class = {n: float("nan") for n in self.classes}
        if self._image_ids:
            with contextlib.redirect_stdout(io.StringIO()):
                dt = self.coco_gt.loadRes(self._results) if self._results else None
                ev = COCOeval(
                    self.coco_gt, dt if dt is not None else _empty_like(self.coco_gt), "bbox"
                )
                ev.params.imgIds = sorted(set(self._image_ids))
                ev.params.catIds = self.cat_ids
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            stats = {n: 100.0 * float(v) for n, v in zip(COCO_STAT_NAMES, ev.stats)}
            stats = {k: (float("nan") if v < 0 else v) for k, v in stats.items()}
            precision = ev.eval["precision"]  # [T, R, K, A, M]
            for k, name in enumerate(self.classes):
                p = precision[0, :, k, 0, -1]
                p = p[p > -1]
                per_class[name] = 100.0 * float(np.mean(p)) if p.size else float("nan")
        by_id = dict(zip(self.cat_ids, per_class.values()))
        result: dict[str, Any] = dict(stats)
        for g, ids in self.groups.items():
            result[f"AP50_{g}"] = _nanmean([by_id[i] for i in ids])
        result["AP50_all"] = _nanmean(list(per_class.values()))
        result["per_class_AP50"] = per_class
        return {"bbox": result}


def coco_results(
    image_id: int,
    out: Mapping[str, torch.Tensor],
    cat_ids: Sequence[int],
    segmentations: Sequence[Any] | None = None,
) -> list[dict[str, Any]]:
    """One image's detections as COCO result records (``bbox`` as XYWH).

    Args:
        image_id: the image's id.
        out: ``boxes`` ``[M, 4]`` XYXY, ``scores`` ``[M]``, ``labels`` ``[M]`` (indices into
            ``cat_ids``).
        cat_ids: the category id of each label.
        segmentations: ``M`` RLEs to store as ``segmentation`` (mask evaluation), or ``None``.

    Raises:
        ValueError: a label outside ``0 .. len(cat_ids) - 1``.
    """
    boxes = out["boxes"].detach().float().cpu().numpy().reshape(-1, 4)
    scores = out["scores"].detach().float().cpu().numpy().reshape(-1)
    labels = out["labels"].detach().cpu().numpy().reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= len(cat_ids)):
        raise ValueError(
            f"Detection labels must index the {len(cat_ids)} classes, got values in "
            f"[{labels.min()}, {labels.max()}]."
        )
    rles = [None] * len(labels) if segmentations is None else list(segmentations)
    records = []
    for (x1, y1, x2, y2), s, k, rle in zip(boxes, scores, labels, rles, strict=True):
        record: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(cat_ids[int(k)]),
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(s),
        }
        if rle is not None:
            record["segmentation"] = rle
        records.append(record)
    return records


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _empty_like(coco_gt: Any) -> Any:
    """A detections COCO object with no detections (``loadRes`` refuses an empty list)."""
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "annotations": [],
        "categories": list(coco_gt.dataset["categories"]),
    }
    dt.createIndex()
    return dt
