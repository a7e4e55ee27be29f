"""CLIPSelf's region-classification benchmark (docs/methods.md#clipself-evaluation): zero-shot
classification of the ground-truth boxes and masks of COCO panoptic val from dense features.

For every image the segmentor's backbone computes the dense features of the whole (resized)
image once; every ground-truth segment is then pooled from them -- RoIAlign over its box or
mask pooling under its mask (:class:`~ovdense.modeling.heads.RegionClassifier`) -- and compared
with the text embeddings of *all* panoptic categories. The metrics are top-1 accuracy over the
regions and mean per-class accuracy, for things, stuff and all classes (percent).

The annotation sets are read by :mod:`ovdense.data.coco` (:class:`CocoPanoptic`,
:func:`load_coco_panoptic`, :class:`CocoInstances`); their names are importable from here as
before. Category names come from the JSON; COCO's stuff names are cleaned for the prompts by
:func:`~ovdense.data.coco.clean_category_name` (``"wall-other-merged"`` -> ``"wall"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.coco import (
    CocoInstances,
    CocoPanoptic,
    PanopticCategory,
    PanopticImage,
    PanopticSegment,
    clean_category_name,
    load_coco_panoptic,
)
from ..modeling.heads.region import RegionClassifier
from ..modeling.segmentors.training_free import rescale_size
from ..utils.image import load_image
from .base import check_class_groups

__all__ = [
    "MODES",
    "CocoInstances",
    "CocoPanoptic",
    "PanopticCategory",
    "PanopticImage",
    "PanopticSegment",
    "RegionAccuracy",
    "clean_category_name",
    "evaluate_regions",
    "load_coco_panoptic",
]

RegionMode = Literal["boxes", "masks"]
MODES: tuple[str, ...] = ("boxes", "masks")


class RegionAccuracy:
    """Accumulates region-classification results: correct and total counts per class.

    Args:
        isthing: thing flag of each class (its length is the number of classes).
        class_names: optional names for the per-class table.
        groups: optional named groups of class indices, each summarised like ``things``
            (e.g. ``{"seen": [...], "held_out": [...]}``).
    """

    def __init__(
        self,
        isthing: Sequence[bool],
        class_names: Sequence[str] | None = None,
        groups: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        self.isthing = np.asarray(list(isthing), dtype=bool)
        self.groups = check_class_groups(groups, len(self.isthing))
        n = len(self.isthing)
        if class_names is not None and len(class_names) != n:
            raise ValueError(f"Got {len(class_names)} class names for {n} classes.")
        self.class_names = list(class_names) if class_names is not None else None
        self.correct = np.zeros(n, dtype=np.int64)
        self.total = np.zeros(n, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.isthing)

    def update(self, pred: Sequence[int] | np.ndarray | torch.Tensor, gt: Any) -> None:
        """Add regions: predicted and ground-truth class indices (a prediction of ``-1``, e.g.
        for a region with no feature, counts as wrong)."""
        pred_a = np.asarray(pred.cpu() if isinstance(pred, torch.Tensor) else pred, np.int64)
        gt_a = np.asarray(gt.cpu() if isinstance(gt, torch.Tensor) else gt, np.int64)
        pred_a, gt_a = pred_a.reshape(-1), gt_a.reshape(-1)
        if pred_a.shape != gt_a.shape:
            raise ValueError(f"Got {pred_a.size} predictions for {gt_a.size} regions.")
        if gt_a.size and (gt_a.min() < 0 or gt_a.max() >= self.num_classes):
            raise ValueError(f"Ground-truth classes must be in [0, {self.num_classes}).")
        np.add.at(self.total, gt_a, 1)
        np.add.at(self.correct, gt_a[pred_a == gt_a], 1)

    def _summary(self, select: np.ndarray) -> dict[str, float | int]:
        total, correct = self.total[select], self.correct[select]
        present = total > 0
        n = int(total.sum())
        top1 = 100.0 * correct.sum() / n if n else math.nan
        mean = (
            100.0 * float(np.mean(correct[present] / total[present]))
            if present.any()
            else (math.nan)
        )
        return {
            "top1": float(top1),
            "mean_acc": mean,
            "num_regions": n,
            "num_classes": int(present.sum()),
        }

    def compute(self) -> dict[str, Any]:
        """Top-1 accuracy over regions (``top1``) and mean per-class accuracy over the classes
        with regions (``mean_acc``), in percent (NaN when no region), for ``things``, ``stuff``
        and ``all``; ``per_class`` accuracies (NaN for classes without regions)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = 100.0 * self.correct / self.total
        names = self.class_names or [str(i) for i in range(self.num_classes)]
        result: dict[str, Any] = {
            "things": self._summary(self.isthing),
            "stuff": self._summary(~self.isthing),
            "all": self._summary(np.ones_like(self.isthing)),
        }
        for group, members in self.groups.items():
            select = np.zeros_like(self.isthing)
            select[members] = True
            result[group] = self._summary(select)
        result["per_class"] = {name: float(a) for name, a in zip(names, acc, strict=True)}
        return result


@torch.no_grad()
def evaluate_regions(
    segmentor: Any,
    dataset: CocoPanoptic | CocoInstances,
    mode: RegionMode | Sequence[RegionMode] = "boxes",
    progress: bool = True,
    classifier: RegionClassifier | None = None,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Zero-shot classification of the ground-truth boxes / masks of a panoptic set.

    Each image is loaded, resized as the segmentor does (short side to ``segmentor.short_side``
    with the long side capped by ``segmentor.max_long_side``, bilinear; ``None`` keeps it),
    and its dense features are computed once over the whole image in fp32
    (``segmentor.forward_features(normalised image)``: the backbone, then the segmentor's
    refiner if any, e.g. CLIP-DINOiser's pooling; with the vocabulary's embeddings for a
    strategy that reads them, e.g. ResCLIP's semantic feedback). Boxes are scaled into the
    resized image; masks are resized with nearest interpolation. Every region is classified by
    ``classifier`` (default :class:`RegionClassifier` with ``empty="zero"``) against the cleaned
    names of all categories. A mask that covers no feature cell after resizing counts as wrong.

    Args:
        segmentor: a :class:`~ovdense.modeling.segmentors.TrainingFreeSegmentor` (or anything
            with ``backbone``, ``encode_text`` and ``short_side``; ``forward_features`` is used
            when present).
        dataset: from :func:`load_coco_panoptic` or a :class:`CocoInstances` (its ``groups``,
            if any, are reported too).
        mode: ``"boxes"``, ``"masks"`` or a sequence of both (features are shared).
        progress: show a progress bar.
        classifier: the region classifier.
        return_predictions: also return ``predictions``: per image, ``{"image_id",
            "segment_ids", "gt"}`` and the predicted class index of each segment per mode
            (``-1`` for a mask covering no feature cell).

    Returns:
        ``{mode: RegionAccuracy.compute(), ..., "num_images": n, "num_regions": k,
        "num_empty_masks": e, "class_names": [...]}`` (and ``predictions`` if asked).
    """
    modes = [mode] if isinstance(mode, str) else list(mode)
    if not modes or any(m not in MODES for m in modes):
        raise ValueError(f"mode must be one of {MODES} (or a list of them), got {mode!r}.")
    classifier = classifier or RegionClassifier(empty="zero")
    names = dataset.class_names
    text = segmentor.encode_text(names)
    backbone = segmentor.backbone
    device = next(backbone.parameters()).device
    groups = getattr(dataset, "groups", None)
    meters = {m: RegionAccuracy(dataset.isthing, names, groups) for m in modes}
    short_side = getattr(segmentor, "short_side", None)
    max_long = getattr(segmentor, "max_long_side", None)
    num_images = num_regions = num_empty = 0
    predictions: list[dict[str, Any]] = []
    bar = tqdm(dataset, desc="regions", unit="img", disable=not progress, total=len(dataset))
    for item in bar:
        num_images += 1
        if not item.segments:
            continue
        pixels = load_image(item.image_path)
        h, w = pixels.shape[:2]
        if (h, w) != (item.height, item.width):
            raise ValueError(
                f"Image '{item.image_path}' is {h}x{w} but its annotation is "
                f"{item.height}x{item.width}."
            )
        img = torch.tensor(pixels).permute(2, 0, 1)[None].to(device, torch.float32) / 255.0
        hr, wr = rescale_size(h, w, short_side, max_long)
        if (hr, wr) != (h, w):
            img = F.interpolate(img, size=(hr, wr), mode="bilinear", align_corners=False)
        x = backbone.normalize(img)
        # the features the segmentor classifies: backbone, then its refiner if it has one;
        # a strategy whose features depend on the vocabulary (ResCLIP) gets the class names'
        extras = segmentor._text_extras(text) if hasattr(segmentor, "_text_extras") else None
        feats = (
            segmentor.forward_features(x, extras)[0]
            if hasattr(segmentor, "forward_features")
            else backbone(x)
        )
        gt = torch.tensor([s.category_index for s in item.segments])
        num_regions += len(item.segments)
        record: dict[str, Any] = {
            "image_id": item.image_id,
            "segment_ids": [s.id for s in item.segments],
            "gt": gt.tolist(),
        }
        if "boxes" in meters:
            boxes = torch.tensor([s.bbox for s in item.segments], dtype=torch.float32)
            boxes = boxes * torch.tensor([wr / w, hr / h, wr / w, hr / h])
            out = classifier(feats, text, boxes=[boxes.to(device)])
            meters["boxes"].update(out["labels"], gt)
            record["boxes"] = out["labels"].tolist()
        if "masks" in meters:
            masks = torch.from_numpy(np.stack([s.mask for s in item.segments])).to(device)
            masks = F.interpolate(masks[:, None].float(), size=(hr, wr), mode="nearest")[:, 0] > 0
            gh, gw = feats.dense.shape[-2:]
            s = feats.stride
            covered = masks[:, : gh * s, : gw * s].flatten(1).any(dim=1)
            num_empty += int((~covered).sum())
            out = classifier(feats, text, masks=[masks])
            labels = torch.where(covered, out["labels"], torch.full_like(out["labels"], -1))
            meters["masks"].update(labels, gt)
            record["masks"] = labels.tolist()
        if return_predictions:
            predictions.append(record)
    results: dict[str, Any] = {m: meter.compute() for m, meter in meters.items()}
    results.update(
        num_images=num_images,
        num_regions=num_regions,
        num_empty_masks=num_empty,
        class_names=names,
    )
    if return_predictions:
        results["predictions"] = predictions
    return results
