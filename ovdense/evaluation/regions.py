"""CLIPSelf's region-classification benchmark (REFERENCE §4): zero-shot classification of the
ground-truth boxes and masks of COCO panoptic val from dense features.

For every image the segmentor's backbone computes the dense features of the whole (resized)
image once; every ground-truth segment is then pooled from them -- RoIAlign over its box or
mask pooling under its mask (:class:`~ovdense.modeling.heads.RegionClassifier`) -- and compared
with the text embeddings of *all* panoptic categories. The metrics are top-1 accuracy over the
regions and mean per-class accuracy, for things, stuff and all classes (percent).

Category names come from the panoptic JSON; COCO's stuff names are cleaned for the prompts by
:func:`clean_category_name` (``"wall-other-merged"`` -> ``"wall"``,
``"window-blind"`` -> ``"window blind"``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

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
_SUFFIXES = ("-merged", "-other", "-stuff")


def clean_category_name(name: str) -> str:
    """A COCO panoptic category name as a prompt: drop ``-merged`` / ``-other`` / ``-stuff``
    suffixes (repeatedly, so ``"wall-other-merged"`` -> ``"wall"``), then ``-`` -> space."""
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                changed = True
    return name.replace("-", " ").strip()


@dataclass(frozen=True)
class PanopticCategory:
    """One panoptic category: its COCO ``id``, JSON ``name``, prompt name and thing flag."""

    id: int
    name: str
    isthing: bool

    @property
    def prompt_name(self) -> str:
        """The cleaned name used for the text embedding (see :func:`clean_category_name`)."""
        return clean_category_name(self.name)


@dataclass
class PanopticSegment:
    """One ground-truth segment.

    Attributes:
        id: the segment id (``R + 256 G + 256**2 B`` in the panoptic PNG).
        category_id: COCO category id.
        category_index: index of the category in :attr:`CocoPanoptic.categories`.
        isthing: whether the category is a thing.
        bbox: ``(x1, y1, x2, y2)`` pixels, from the JSON's XYWH box.
        mask: ``[H, W]`` bool mask decoded from the panoptic PNG.
        iscrowd: the JSON's crowd flag.
    """

    id: int
    category_id: int
    category_index: int
    isthing: bool
    bbox: tuple[float, float, float, float]
    mask: np.ndarray
    iscrowd: bool = False


@dataclass
class PanopticImage:
    """An image of the panoptic set with its segments (``height x width`` pixels)."""

    image_id: int
    image_path: Path
    height: int
    width: int
    segments: list[PanopticSegment] = field(default_factory=list)


class CocoPanoptic:
    """A COCO-panoptic annotation set; iterating decodes one image's segments at a time.

    Args:
        json_path: the panoptic JSON (``panoptic_val2017.json``).
        png_dir: folder of the panoptic PNGs (``panoptic_val2017/``).
        image_dir: folder of the images (``val2017/``).
        limit: keep only the first ``limit`` annotated images (JSON order).
        skip_crowd: drop segments flagged ``iscrowd``.

    Raises:
        FileNotFoundError: a missing JSON or folder.
        ValueError: a JSON without the panoptic keys, or an annotation of an unknown image or
            category.
    """

    def __init__(
        self,
        json_path: str | os.PathLike,
        png_dir: str | os.PathLike,
        image_dir: str | os.PathLike,
        limit: int | None = None,
        skip_crowd: bool = False,
    ) -> None:
        json_path, self.png_dir, self.image_dir = Path(json_path), Path(png_dir), Path(image_dir)
        if not json_path.is_file():
            raise FileNotFoundError(f"Panoptic JSON not found: '{json_path}'.")
        for what, folder in (("panoptic PNG", self.png_dir), ("image", self.image_dir)):
            if not folder.is_dir():
                raise FileNotFoundError(f"The {what} folder '{folder}' does not exist.")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}.")
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"'{json_path}' is not valid JSON: {err}.") from None
        missing = [k for k in ("images", "annotations", "categories") if k not in data]
        if missing:
            raise ValueError(
                f"'{json_path}' is not a COCO panoptic JSON: no {', '.join(missing)} key(s)."
            )
        self.categories = [
            PanopticCategory(int(c["id"]), str(c["name"]), bool(c.get("isthing", 1)))
            for c in data["categories"]
        ]
        self._cat_index = {c.id: i for i, c in enumerate(self.categories)}
        self._images = {int(im["id"]): im for im in data["images"]}
        annotations = list(data["annotations"])
        self.annotations = annotations if limit is None else annotations[:limit]
        self.skip_crowd = skip_crowd
        for ann in self.annotations:
            if int(ann["image_id"]) not in self._images:
                raise ValueError(
                    f"Annotation '{ann['file_name']}' names unknown image id {ann['image_id']}."
                )
            for seg in ann["segments_info"]:
                if int(seg["category_id"]) not in self._cat_index:
                    raise ValueError(
                        f"Segment {seg['id']} of '{ann['file_name']}' has unknown category id "
                        f"{seg['category_id']}."
                    )

    @property
    def class_names(self) -> list[str]:
        """Cleaned names of the categories, in order (the vocabulary)."""
        return [c.prompt_name for c in self.categories]

    @property
    def isthing(self) -> list[bool]:
        """Thing flag of each category, in order."""
        return [c.isthing for c in self.categories]

    def __len__(self) -> int:
        return len(self.annotations)

    def __iter__(self) -> Iterator[PanopticImage]:
        for ann in self.annotations:
            yield self._load(ann)

    def _load(self, ann: dict[str, Any]) -> PanopticImage:
        info = self._images[int(ann["image_id"])]
        png_path = self.png_dir / ann["file_name"]
        if not png_path.is_file():
            raise FileNotFoundError(f"Panoptic PNG not found: '{png_path}'.")
        with Image.open(png_path) as im:
            rgb = np.asarray(im.convert("RGB")).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
        height, width = int(info.get("height", ids.shape[0])), int(info.get("width", ids.shape[1]))
        if ids.shape != (height, width):
            raise ValueError(
                f"Panoptic PNG '{png_path}' is {ids.shape[0]}x{ids.shape[1]} but the JSON says "
                f"{height}x{width}."
            )
        segments = []
        for seg in ann["segments_info"]:
            crowd = bool(seg.get("iscrowd", 0))
            if crowd and self.skip_crowd:
                continue
            x, y, w, h = (float(v) for v in seg["bbox"])
            cat = int(seg["category_id"])
            index = self._cat_index[cat]
            segments.append(
                PanopticSegment(
                    id=int(seg["id"]),
                    category_id=cat,
                    category_index=index,
                    isthing=self.categories[index].isthing,
                    bbox=(x, y, x + w, y + h),
                    mask=ids == int(seg["id"]),
                    iscrowd=crowd,
                )
            )
        return PanopticImage(
            image_id=int(info["id"]),
            image_path=self.image_dir / info["file_name"],
            height=height,
            width=width,
            segments=segments,
        )


class CocoInstances:
    """A COCO-format *instance* set (``instances.json`` + images) as region-annotated images:
    iterating yields :class:`PanopticImage` items whose segments are the annotations (mask
    decoded from the RLE / polygons, XYXY box from the JSON's XYWH ``bbox``; every category is
    a thing).

    Args:
        json_path: the instances JSON.
        image_dir: folder of the images.
        limit: keep only the first ``limit`` images (JSON order).

    Attributes:
        groups: ``{"seen": [...], "held_out": [...]}`` class indices when the categories carry
            a ``held_out`` flag (the shapes world's ``shapes_det``), else ``{}``.

    Raises:
        FileNotFoundError: a missing JSON or image folder.
        ValueError: the JSON is not COCO instances (no ``images``/``annotations``/``categories``).
    """

    def __init__(
        self, json_path: str | os.PathLike, image_dir: str | os.PathLike, limit: int | None = None
    ) -> None:
        from pycocotools.coco import COCO

        json_path, self.image_dir = Path(json_path), Path(image_dir)
        if not json_path.is_file():
            raise FileNotFoundError(f"Instances JSON not found: '{json_path}'.")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"Image folder not found: '{self.image_dir}'.")
        data = json.loads(json_path.read_text(encoding="utf-8"))
        missing = [k for k in ("images", "annotations", "categories") if k not in data]
        if missing:
            raise ValueError(f"'{json_path}' is not a COCO instances file: no {missing} key(s).")
        self.coco = COCO()
        self.coco.dataset = data
        self.coco.createIndex()
        cats = sorted(data["categories"], key=lambda c: int(c["id"]))
        self.categories = [PanopticCategory(int(c["id"]), str(c["name"]), True) for c in cats]
        self._cat_index = {c.id: i for i, c in enumerate(self.categories)}
        self.groups: dict[str, list[int]] = {}
        if cats and all("held_out" in c for c in cats):
            self.groups = {
                "seen": [i for i, c in enumerate(cats) if not c["held_out"]],
                "held_out": [i for i, c in enumerate(cats) if c["held_out"]],
            }
        self.image_ids = [int(img["id"]) for img in data["images"]][:limit]

    @property
    def class_names(self) -> list[str]:
        """Category names, used as the prompts."""
        return [c.name for c in self.categories]

    @property
    def isthing(self) -> list[bool]:
        return [True] * len(self.categories)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __iter__(self) -> Iterator[PanopticImage]:
        for image_id in self.image_ids:
            info = self.coco.imgs[image_id]
            segments = []
            for ann in self.coco.imgToAnns.get(image_id, []):
                x, y, w, h = (float(v) for v in ann["bbox"])
                index = self._cat_index[int(ann["category_id"])]
                segments.append(
                    PanopticSegment(
                        id=int(ann["id"]),
                        category_id=int(ann["category_id"]),
                        category_index=index,
                        isthing=True,
                        bbox=(x, y, x + w, y + h),
                        mask=self.coco.annToMask(ann).astype(bool),
                        iscrowd=bool(ann.get("iscrowd", 0)),
                    )
                )
            yield PanopticImage(
                image_id=image_id,
                image_path=self.image_dir / info["file_name"],
                height=int(info["height"]),
                width=int(info["width"]),
                segments=segments,
            )


def load_coco_panoptic(
    json_path: str | os.PathLike,
    png_dir: str | os.PathLike,
    image_dir: str | os.PathLike,
    limit: int | None = None,
    skip_crowd: bool = False,
) -> CocoPanoptic:
    """Open a COCO panoptic set: iterate it for :class:`PanopticImage` items (image path and
    segments with category, thing flag, XYXY box and decoded mask); ``.categories`` lists the
    :class:`PanopticCategory` items. See :class:`CocoPanoptic` for the arguments."""
    return CocoPanoptic(json_path, png_dir, image_dir, limit=limit, skip_crowd=skip_crowd)


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
    dataset: CocoPanoptic,
    mode: RegionMode | Sequence[RegionMode] = "boxes",
    progress: bool = True,
    classifier: RegionClassifier | None = None,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Zero-shot classification of the ground-truth boxes / masks of a panoptic set.

    Each image is loaded, resized as the segmentor does (short side to ``segmentor.short_side``
    with the long side capped by ``segmentor.max_long_side``, bilinear; ``None`` keeps it),
    and its dense features are computed once over the whole image in fp32
    (``segmentor.backbone(segmentor.backbone.normalize(img01))``). Boxes are scaled into the
    resized image; masks are resized with nearest interpolation. Every region is classified by
    ``classifier`` (default :class:`RegionClassifier` with ``empty="zero"``) against the cleaned
    names of all categories. A mask that covers no feature cell after resizing counts as wrong.

    Args:
        segmentor: a :class:`~ovdense.modeling.segmentors.TrainingFreeSegmentor` (or anything
            with ``backbone``, ``encode_text`` and ``short_side``).
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
        feats = backbone(backbone.normalize(img))
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
