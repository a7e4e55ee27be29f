"""LVIS evaluation: the federated protocol, APr / APc / APf, box and mask AP.

Re-implemented from the protocol of the LVIS API (``lvis`` 0.5.3, ``LVISEval`` /
``LVISResults``, which F-ViT's ``LVISV1DatasetOV.evaluate`` runs through mmdet); the released
``lvis`` package cannot run on numpy >= 1.24 (``np.float`` in ``accumulate``), so ovdense does
not depend on it, and ``tests/detection/test_lvis.py`` checks this module against it (with a
shim for ``np.float``) on synthetic detections:

- **at most 300 detections per image** (``max_dets``): the highest-scoring ones over all
  categories (a stable sort, so equal scores keep their input order);
- **federated**: in an image, detections of a category are evaluated only if the category is
  annotated there (positive) or listed in the image's ``neg_category_ids`` (verified absent);
  all others are dropped, since nothing is known about them;
- **not exhaustive**: an *unmatched* detection of a category in the image's
  ``not_exhaustive_category_ids`` is ignored (neither true nor false positive);
- per category, greedy matching by decreasing score at IoU 0.50:0.05:0.95 (an annotation's
  ``ignore`` flag or an area outside the range makes it "ignored"; a detection prefers the best
  non-ignored match), 101-point interpolated precision, categories without (non-ignored)
  annotations among the evaluated images left out (-1);
- AP over all categories, APr / APc / APf over the categories of each ``frequency`` (rare:
  fewer than 10 training images, common: 10-99, frequent: 100 or more), APs / APm / APl by
  area (32^2, 96^2; the annotation's ``area`` field, a detection's box or mask area), AR@300;
- annotations and detections of area 0 are left out (``LVIS.get_ann_ids``'s open interval).

The IoU of a detection and an annotation is pycocotools' ``mask.iou`` (boxes or RLE masks;
polygons are rasterised at the image's size).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import DatasetEvaluator
from .detection import _nanmean, coco_results

__all__ = [
    "LVIS_STAT_NAMES",
    "LVISEvalResult",
    "LVISEvaluator",
    "lvis_evaluate",
]

#: The summary numbers of :func:`lvis_evaluate`, in the order the LVIS API prints them.
LVIS_STAT_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf",
    "AR@300", "ARs@300", "ARm@300", "ARl@300",
)  # fmt: skip

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
AREA_RANGES: tuple[tuple[str, float, float], ...] = (
    ("all", 0.0, 1e5**2),
    ("small", 0.0, 32.0**2),
    ("medium", 32.0**2, 96.0**2),
    ("large", 96.0**2, 1e5**2),
)
FREQUENCIES = ("r", "c", "f")


@dataclass
class LVISEvalResult:
    """What :func:`lvis_evaluate` measured.

    Attributes:
        stats: :data:`LVIS_STAT_NAMES` -> value in ``[0, 1]`` (-1: nothing to measure).
        precision: ``[T=10, R=101, K, A=4]`` interpolated precision (-1: no annotation).
        recall: ``[T, K, A]`` recall at the last detection (-1: no annotation).
        cat_ids: the ``K`` category ids, sorted (the order of ``precision``'s axis 2).
        freq_groups: ``{"r" | "c" | "f": [category indices]}``.
    """

    stats: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    cat_ids: list[int]
    freq_groups: dict[str, list[int]] = field(default_factory=dict)

    def per_category_ap(self, iou: float | None = None) -> dict[int, float]:
        """``{category id: AP}`` in ``[0, 1]`` over all areas (``iou``: at that IoU threshold
        only, e.g. 0.5 for AP50); NaN where the category has no annotation."""
        p = self.precision[..., 0]
        if iou is not None:
            p = p[np.isclose(IOU_THRESHOLDS, iou)]
        out = {}
        for k, cid in enumerate(self.cat_ids):
            v = p[:, :, k]
            v = v[v > -1]
            out[cid] = float(np.mean(v)) if v.size else float("nan")
        return out


def _limit_per_image(dets: Sequence[Mapping[str, Any]], max_dets: int) -> list[Mapping[str, Any]]:
    by_image: dict[int, list[Mapping[str, Any]]] = {}
    for d in dets:
        by_image.setdefault(int(d["image_id"]), []).append(d)
    out: list[Mapping[str, Any]] = []
    for ds in by_image.values():
        if 0 <= max_dets < len(ds):
            ds = sorted(ds, key=lambda d: float(d["score"]), reverse=True)[:max_dets]
        out.extend(ds)
    return out


def _gt_region(ann: Mapping[str, Any], img: Mapping[str, Any], iou_type: str) -> Any:
    if iou_type == "bbox":
        return list(ann["bbox"])
    from pycocotools import mask as mask_utils

    segm = ann["segmentation"]
    h, w = int(img["height"]), int(img["width"])
    if isinstance(segm, list):  # polygons: one mask of all parts
        return mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    if isinstance(segm["counts"], list):  # uncompressed RLE
        return mask_utils.frPyObjects(segm, h, w)
    return segm


def _match(ious: np.ndarray, gt_ignore: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching of ``[D, G]`` IoUs (detections by decreasing score, annotations ignored
    last) at every IoU threshold: ``(dt_matched [T, D], dt_ignored [T, D], gt_matched [T, G])``.

    A detection takes, among the still unmatched annotations with IoU >= the threshold, the
    non-ignored one of highest IoU (the last of equal ones), else the ignored one of highest IoU.
    """
    t, (d, g) = len(IOU_THRESHOLDS), ious.shape
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]
    gt_m = np.zeros((t, g), bool)
    dt_m = np.zeros((t, d), bool)
    dt_ig = np.zeros((t, d), bool)
    if g == 0:
        return dt_m, dt_ig, gt_m
    rows = np.arange(t)
    for i in range(d):
        cand = ~gt_m & (ious[i][None, :] >= thr)
        choice = np.full(t, -1)
        for allowed in (gt_ignore, ~gt_ignore):  # a non-ignored match overrides an ignored one
            vals = np.where(cand & allowed[None, :], ious[i][None, :], -1.0)
            has = vals.max(1) >= 0
            last = g - 1 - np.argmax(vals[:, ::-1], axis=1)
            choice = np.where(has, last, choice)
        ok = choice >= 0
        gt_m[rows[ok], choice[ok]] = True
        dt_m[ok, i] = True
        dt_ig[ok, i] = gt_ignore[choice[ok]]
    return dt_m, dt_ig, gt_m


def lvis_evaluate(
    gt: Mapping[str, Any],
    detections: Sequence[Mapping[str, Any]],
    iou_type: str = "bbox",
    max_dets: int = 300,
    image_ids: Iterable[int] | None = None,
) -> LVISEvalResult:
    """Evaluate detections against an LVIS ground truth with LVIS's protocol (module doc).

    Args:
        gt: the LVIS JSON's content (``images`` with ``neg_category_ids`` /
            ``not_exhaustive_category_ids``, ``annotations``, ``categories`` with
            ``frequency``).
        detections: COCO results: ``{"image_id", "category_id", "bbox": [x, y, w, h],
            "score"}``, plus ``"segmentation"`` (compressed RLE) for ``iou_type="segm"``.
        iou_type: ``"bbox"`` or ``"segm"``.
        max_dets: detections kept per image (LVIS: 300; -1 keeps all).
        image_ids: the images evaluated (default: every image of ``gt``).

    Raises:
        ValueError: an unknown ``iou_type``, a detection of an image or category not in
            ``gt``, ``segm`` detections without ``segmentation``, or categories without a
            ``frequency``.
    """
    from pycocotools import mask as mask_utils

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}.")
    imgs = {int(im["id"]): im for im in gt["images"]}
    cats = sorted(gt["categories"], key=lambda c: int(c["id"]))
    cat_ids = [int(c["id"]) for c in cats]
    cat_index = {c: k for k, c in enumerate(cat_ids)}
    freq_groups: dict[str, list[int]] = {f: [] for f in FREQUENCIES}
    for k, c in enumerate(cats):
        if c.get("frequency") not in freq_groups:
            raise ValueError(
                f"Category {c.get('name')!r} (id {c['id']}) has no LVIS frequency ('r', 'c' or "
                "'f'): not an LVIS ground truth."
            )
        freq_groups[str(c["frequency"])].append(k)
    ids = sorted({int(i) for i in (imgs if image_ids is None else image_ids)})
    unknown = [i for i in ids if i not in imgs]
    if unknown:
        raise ValueError(f"image ids not in the ground truth: {unknown[:10]}.")
    wanted = set(ids)

    # ground truth, in image then annotation order (areas in (0, inf), as LVIS.get_ann_ids)
    anns_by_image: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for a in gt["annotations"]:
        anns_by_image[int(a["image_id"])].append(a)
    gts: dict[tuple[int, int], list[Mapping[str, Any]]] = defaultdict(list)
    positive: dict[int, set[int]] = defaultdict(set)
    for i in ids:
        for a in anns_by_image.get(i, []):
            c = int(a["category_id"])
            if c in cat_index and 0 < float(a["area"]) < math.inf:
                gts[i, c].append(a)
                positive[i].add(c)

    # detections: <= max_dets per image, then kept only where the category is verified
    dets = _limit_per_image(detections, max_dets)
    for d in dets:
        if int(d["image_id"]) not in imgs:
            raise ValueError(f"A detection's image {d['image_id']} is not in the ground truth.")
        if int(d["category_id"]) not in cat_index:
            raise ValueError(
                f"A detection's category {d['category_id']} is not in the ground truth."
            )
        if iou_type == "segm" and "segmentation" not in d:
            raise ValueError("segm evaluation needs a 'segmentation' (RLE) in every detection.")
    dets_by_image: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for d in dets:
        dets_by_image[int(d["image_id"])].append(d)
    dts: dict[tuple[int, int], list[tuple[float, float, Any]]] = defaultdict(list)
    for i in ids:
        negative = {int(c) for c in imgs[i].get("neg_category_ids", [])}
        for d in dets_by_image.get(i, []):
            c = int(d["category_id"])
            # a detection's area is its box's when it has one, also for masks (LVISResults)
            if "bbox" in d:
                area = float(d["bbox"][2]) * float(d["bbox"][3])
            else:
                area = float(mask_utils.area(d["segmentation"]))
            region: Any = [float(v) for v in d["bbox"]] if iou_type == "bbox" else d["segmentation"]
            if not 0 < area < math.inf:
                continue
            if c in negative or c in positive[i]:
                dts[i, c].append((float(d["score"]), area, region))

    t, r, k, a = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(cat_ids), len(AREA_RANGES)
    precision = -np.ones((t, r, k, a))
    recall = -np.ones((t, k, a))
    keys = sorted(set(gts) | set(dts), key=lambda key: (key[1], key[0]))
    per_cat: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for key in keys:
        if key[0] in wanted:
            per_cat[key[1]].append(key)
    for c, cat_keys in per_cat.items():
        # per area range: scores, matched, ignored of every image's detections, gt ignore flags
        acc: list[dict[str, list[np.ndarray]]] = [defaultdict(list) for _ in AREA_RANGES]
        for i, _ in cat_keys:
            g_list = gts.get((i, c), [])
            d_list = dts.get((i, c), [])
            order = np.argsort([-s for s, _, _ in d_list], kind="mergesort")
            d_list = [d_list[j] for j in order]
            scores = np.array([s for s, _, _ in d_list], dtype=np.float64)
            d_area = np.array([ar for _, ar, _ in d_list], dtype=np.float64)
            if g_list and d_list:
                g_regions = [_gt_region(g, imgs[i], iou_type) for g in g_list]
                ious = np.asarray(
                    mask_utils.iou([x for _, _, x in d_list], g_regions, [0] * len(g_list)),
                    dtype=np.float64,
                ).reshape(len(d_list), len(g_list))
            else:
                ious = np.zeros((len(d_list), len(g_list)))
            g_area = np.array([float(g["area"]) for g in g_list], dtype=np.float64)
            g_flag = np.array([bool(g.get("ignore", 0)) for g in g_list], dtype=bool)
            not_exhaustive = c in {int(x) for x in imgs[i].get("not_exhaustive_category_ids", [])}
            for ai, (_, lo, hi) in enumerate(AREA_RANGES):
                g_ig = g_flag | (g_area < lo) | (g_area > hi)
                g_order = np.argsort(g_ig, kind="mergesort")
                dt_m, dt_ig, _ = _match(ious[:, g_order], g_ig[g_order])
                loose = (d_area < lo) | (d_area > hi) | not_exhaustive
                dt_ig = dt_ig | (~dt_m & loose[None, :])
                acc[ai]["scores"].append(scores)
                acc[ai]["matched"].append(dt_m)
                acc[ai]["ignored"].append(dt_ig)
                acc[ai]["gt_ignore"].append(g_ig)
        ki = cat_index[c]
        for ai, parts in enumerate(acc):
            num_gt = int(np.count_nonzero(~np.concatenate(parts["gt_ignore"])))
            if num_gt == 0:
                continue
            scores = np.concatenate(parts["scores"])
            order = np.argsort(-scores, kind="mergesort")
            matched = np.concatenate(parts["matched"], axis=1)[:, order]
            ignored = np.concatenate(parts["ignored"], axis=1)[:, order]
            tp = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
            fp = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
            n = tp.shape[1]
            for ti in range(t):
                rc = tp[ti] / num_gt
                recall[ti, ki, ai] = rc[-1] if n else 0.0
                pr = tp[ti] / (fp[ti] + tp[ti] + np.spacing(1))
                pr = np.maximum.accumulate(pr[::-1])[::-1] if n else pr
                idx = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
                q = np.zeros(r)
                ok = idx < n
                q[ok] = pr[idx[ok]]
                precision[ti, :, ki, ai] = q

    def mean(x: np.ndarray) -> float:
        v = x[x > -1]
        return float(np.mean(v)) if v.size else -1.0

    t50, t75 = np.isclose(IOU_THRESHOLDS, 0.5), np.isclose(IOU_THRESHOLDS, 0.75)
    stats = {
        "AP": mean(precision[..., 0]),
        "AP50": mean(precision[t50][..., 0]),
        "AP75": mean(precision[t75][..., 0]),
        "APs": mean(precision[..., 1]),
        "APm": mean(precision[..., 2]),
        "APl": mean(precision[..., 3]),
    }
    for f in FREQUENCIES:
        stats[f"AP{f}"] = mean(precision[:, :, freq_groups[f], 0])
    stats["AR@300"] = mean(recall[..., 0])
    for ai, name in ((1, "s"), (2, "m"), (3, "l")):
        stats[f"AR{name}@300"] = mean(recall[..., ai])
    return LVISEvalResult(stats, precision, recall, cat_ids, freq_groups)


class LVISEvaluator(DatasetEvaluator):
    """OV-LVIS evaluation of detections (boxes, and masks for a detector with a mask head).

    Args:
        gt: the LVIS ground truth: the JSON's content, or an object with ``.dataset`` (e.g.
            ``CocoDetection(...).coco``).
        classes: the evaluation vocabulary: detection label ``k`` is the category named
            ``classes[k]`` (normally all 1203; AP is over every category of ``gt``, as LVIS's).
        groups: ``{group: [class names]}`` for ``AP50_<group>`` (F-ViT also reports the mean
            mask AP50 over ``base`` / ``novel`` classes); APr / APc / APf come from ``gt``.
        iou_types: ``("bbox",)`` or ``("bbox", "segm")``.
        max_dets: detections kept per image (LVIS: 300).
        mask_threshold: binarisation of mask probabilities (mmdet's ``mask_thr_binary``,
            ``>= 0.5``).

    ``process(image_ids, outputs)``: one dict per image with ``boxes`` ``[M, 4]`` XYXY,
    ``scores`` ``[M]``, ``labels`` ``[M]`` and, for ``segm``, ``masks`` ``[M, 1, H, W]`` or
    ``[M, H, W]`` (probabilities or bool, at the image's size). Only processed images are
    evaluated.
    """

    def __init__(
        self,
        gt: Any,
        classes: Sequence[str],
        groups: Mapping[str, Sequence[str]] | None = None,
        iou_types: Sequence[str] = ("bbox",),
        max_dets: int = 300,
        mask_threshold: float = 0.5,
    ) -> None:
        self.gt: Mapping[str, Any] = getattr(gt, "dataset", gt)
        by_name = {c["name"]: int(c["id"]) for c in self.gt["categories"]}
        missing = [n for n in classes if n not in by_name]
        if missing:
            raise ValueError(f"classes not among the ground truth's categories: {missing[:10]}.")
        bad_types = [t for t in iou_types if t not in ("bbox", "segm")]
        if bad_types or not iou_types:
            raise ValueError(f"iou_types must be 'bbox' and/or 'segm', got {list(iou_types)}.")
        self.classes = list(classes)
        self.cat_ids = [by_name[n] for n in self.classes]
        self.iou_types = tuple(iou_types)
        self.max_dets = int(max_dets)
        self.mask_threshold = float(mask_threshold)
        self.groups: dict[str, list[int]] = {}
        for g, names in (groups or {}).items():
            outside = [n for n in names if n not in by_name]
            if outside:
                raise ValueError(f"group {g!r} names classes outside the categories: {outside}.")
            self.groups[str(g)] = [by_name[n] for n in names]
        self.reset()

    def reset(self) -> None:
        self._results: list[dict[str, Any]] = []
        self._image_ids: list[int] = []

    def process(self, inputs: Sequence[int], outputs: Sequence[Mapping[str, torch.Tensor]]) -> None:
        from pycocotools import mask as mask_utils

        if len(inputs) != len(outputs):
            raise ValueError(f"{len(inputs)} image ids but {len(outputs)} outputs.")
        for image_id, out in zip(inputs, outputs, strict=True):
            self._image_ids.append(int(image_id))
            rles = None
            if "segm" in self.iou_types:
                if "masks" not in out:
                    raise ValueError(
                        "segm evaluation needs 'masks' in every output (a detector with a mask "
                        "head), or evaluate iou_types=('bbox',)."
                    )
                m = out["masks"].detach().cpu()
                if m.ndim == 4:
                    m = m[:, 0]
                binary = m.bool() if m.dtype == torch.bool else m.float() >= self.mask_threshold
                arr = np.asfortranarray(binary.numpy().astype(np.uint8).transpose(1, 2, 0))
                rles = list(mask_utils.encode(arr)) if len(m) else []
            self._results.extend(coco_results(int(image_id), out, self.cat_ids, rles))

    def evaluate(self) -> dict[str, Any]:
        """``{"bbox": {AP, AP50, AP75, APs, APm, APl, APr, APc, APf, AR@300, ...,
        AP50_<group>..., AP50_all, per_class_AP: {name: value}}, "segm": {...}}`` in percent
        (NaN: nothing to measure)."""
        out: dict[str, Any] = {}
        names = dict(zip(self.cat_ids, self.classes, strict=True))
        for iou_type in self.iou_types:
            if not self._image_ids:
                res: dict[str, Any] = {n: float("nan") for n in LVIS_STAT_NAMES}
                res["per_class_AP"] = {n: float("nan") for n in self.classes}
                out[iou_type] = res
                continue
            ev = lvis_evaluate(self.gt, self._results, iou_type, self.max_dets, self._image_ids)
            res = {n: (100.0 * v if v >= 0 else float("nan")) for n, v in ev.stats.items()}
            ap50 = {c: 100.0 * v for c, v in ev.per_category_ap(0.5).items()}
            for g, ids in self.groups.items():
                res[f"AP50_{g}"] = _nanmean([ap50[i] for i in ids])
            res["AP50_all"] = _nanmean(list(ap50.values()))
            res["per_class_AP"] = {
                names[c]: 100.0 * v for c, v in ev.per_category_ap().items() if c in names
            }
            out[iou_type] = res
        return out
