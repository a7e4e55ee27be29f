"""COCODetectionEvaluator returns pycocotools' own numbers, and F-ViT's per-group AP50."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ovdense.evaluation.detection import COCO_STAT_NAMES, COCODetectionEvaluator


def _gt():
    cats = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 9, "name": "cow"}]
    images = [{"id": i, "width": 100, "height": 80, "file_name": f"{i}.png"} for i in (1, 2, 3)]
    anns = []
    rng = np.random.default_rng(0)
    for img in (1, 2, 3):
        for cat in (3, 7):
            x, y = rng.uniform(0, 50, 2)
            w, h = rng.uniform(10, 40, 2)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": cats}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _detections(coco, seed=0):
    """Jittered ground truth with random scores, plus false positives (also of 'cow')."""
    rng = np.random.default_rng(seed)
    per_image = {}
    index = {3: 0, 7: 1, 9: 2}
    for img in (1, 2, 3):
        boxes, scores, labels = [], [], []
        for a in coco.imgToAnns[img]:
            x, y, w, h = a["bbox"]
            j = rng.normal(0, 3, 4)
            boxes.append([x + j[0], y + j[1], x + w + j[2], y + h + j[3]])
            scores.append(rng.uniform(0.2, 1))
            labels.append(index[a["category_id"]])
        for _ in range(3):
            x, y = rng.uniform(0, 60, 2)
            boxes.append([x, y, x + 20, y + 15])
            scores.append(rng.uniform(0, 0.9))
            labels.append(int(rng.integers(0, 3)))
        per_image[img] = {
            "boxes": torch.tensor(boxes),
            "scores": torch.tensor(scores),
            "labels": torch.tensor(labels),
        }
    return per_image


def test_equals_pycocotools():
    coco = _gt()
    dets = _detections(coco)
    ev = COCODetectionEvaluator(
        coco, ["cat", "dog", "cow"], {"novel": ["dog", "cow"], "base": ["cat"]}
    )
    ev.process([1, 2], [dets[1], dets[2]])
    ev.process([3], [dets[3]])
    got = ev.evaluate()["bbox"]

    # pycocotools directly, on the same detections in COCO's result format
    cat_ids = [3, 7, 9]
    results = []
    for img, d in dets.items():
        for (x1, y1, x2, y2), s, k in zip(
            d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist()
        ):
            results.append(
                {
                    "image_id": img,
                    "category_id": cat_ids[k],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": s,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        ref = COCOeval(coco, coco.loadRes(results), "bbox")
        ref.evaluate()
        ref.accumulate()
        ref.summarize()
    for name, value in zip(COCO_STAT_NAMES, ref.stats):
        expected = float("nan") if value < 0 else 100 * value
        assert got[name] == pytest.approx(expected, nan_ok=True, abs=1e-9), name
    # per-class AP50: precision at IoU 0.5, all areas, 100 detections, mean over recall
    prec = ref.eval["precision"]
    for k, name in enumerate(["cat", "dog"]):
        p = prec[0, :, k, 0, 2]
        assert got["per_class_AP50"][name] == pytest.approx(100 * p[p > -1].mean())
    assert math.isnan(got["per_class_AP50"]["cow"])  # no ground truth: left out of the means
    assert got["AP50_base"] == pytest.approx(got["per_class_AP50"]["cat"])
    assert got["AP50_novel"] == pytest.approx(got["per_class_AP50"]["dog"])
    assert got["AP50_all"] == pytest.approx(
        (got["per_class_AP50"]["cat"] + got["per_class_AP50"]["dog"]) / 2
    )


def test_perfect_and_empty_detections():
    coco = _gt()
    perfect = {}
    for img in (1, 2, 3):
        anns = coco.imgToAnns[img]
        boxes = [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
            for a in anns
        ]
        perfect[img] = {
            "boxes": torch.tensor(boxes),
            "scores": torch.ones(len(anns)),
            "labels": torch.tensor([0 if a["category_id"] == 3 else 1 for a in anns]),
        }
    ev = COCODetectionEvaluator(coco, ["cat", "dog", "cow"])
    ev.process(list(perfect), list(perfect.values()))
    got = ev.evaluate()["bbox"]
    assert got["AP"] == pytest.approx(100.0) and got["AP50_all"] == pytest.approx(100.0)
    ev.reset()
    empty = {
        "boxes": torch.zeros(0, 4),
        "scores": torch.zeros(0),
        "labels": torch.zeros(0, dtype=torch.long),
    }
    ev.process([1, 2, 3], [empty] * 3)
    got = ev.evaluate()["bbox"]
    assert got["AP50"] == 0.0 and got["per_class_AP50"]["cat"] == 0.0
    bad = {**empty, "boxes": torch.ones(1, 4), "scores": torch.ones(1), "labels": torch.tensor([3])}
    with pytest.raises(ValueError, match="index the 3 classes"):
        ev.process([1], [bad])
    with pytest.raises(ValueError, match="categories"):
        COCODetectionEvaluator(coco, ["cat", "horse"])
