"""Detection data: vocabulary-indexed targets, novel classes never targets, counted warnings."""

from __future__ import annotations

import json

import pytest
import torch

from ovdense.data import synthetic
from ovdense.data.detection import CocoDetection, ShapesDetection, detection_collate
from ovdense.data.ov_splits import COCO_OV_BASE, COCO_OV_NOVEL, coco_ov_classes


def test_ov_coco_split_lists():
    assert len(COCO_OV_BASE) == 48 and len(COCO_OV_NOVEL) == 17
    assert not set(COCO_OV_BASE) & set(COCO_OV_NOVEL)
    assert len(set(coco_ov_classes())) == 65 and "tv" in COCO_OV_BASE and "cat" in COCO_OV_NOVEL


def _seen_names():
    names = synthetic.class_names()
    return [names[i] for i in synthetic.class_groups()["seen"]]


def test_novel_classes_never_become_targets(det_set):
    data = json.loads((det_set / "instances.json").read_text())
    held = {c["id"] for c in data["categories"] if c["held_out"]}
    n_held = sum(a["category_id"] in held for a in data["annotations"])
    assert n_held > 0  # the set does hold novel objects
    with pytest.warns(UserWarning, match="annotations left out of the targets") as rec:
        ds = CocoDetection(det_set / "instances.json", det_set / "images", classes=_seen_names())
    msg = str(rec[0].message)
    assert "99" in msg and "degenerate" in msg
    # counted: the novel objects and id 99 (not in the vocabulary), two degenerate boxes
    assert ds.skipped["not_in_vocabulary"] == n_held + 1
    assert ds.skipped["degenerate"] == 2
    present = {a["category_id"] for a in data["annotations"] if a["category_id"] in held}
    assert ds.skipped_category_ids == present | {99}
    seen_ids = {c["id"] for c in data["categories"] if not c["held_out"]}
    kept = sum(a["category_id"] in seen_ids for a in data["annotations"]) - 2  # minus 2 bad
    labels = torch.cat([ds[i]["targets"]["labels"] for i in range(len(ds))])
    assert labels.numel() == kept
    novel_labels = {ds.classes.index(n) for n in ds.classes if n not in _seen_names()}
    assert not novel_labels and int(labels.max()) < len(_seen_names())
    # the empty image is kept, with empty targets of the right types
    empty = next(ds[i] for i in range(len(ds)) if ds[i]["image_id"] == 100)
    assert empty["targets"]["boxes"].shape == (0, 4)
    assert empty["targets"]["labels"].dtype == torch.int64
    batch = detection_collate([ds[0], empty])
    assert len(batch["images"]) == 2 and batch["image_ids"][1] == 100


def test_boxes_are_xyxy_of_the_json(det_set):
    data = json.loads((det_set / "instances.json").read_text())
    with pytest.warns(UserWarning, match="3 annotations left out"):
        ds = CocoDetection(det_set / "instances.json", det_set / "images", limit=1)
    x, y, w, h = data["annotations"][0]["bbox"]
    item = ds[0]
    assert (
        item["image"].shape == (3, 64, 64) and 0 <= item["image"].min() <= item["image"].max() <= 1
    )
    assert item["targets"]["boxes"][0].tolist() == pytest.approx([x, y, x + w, y + h])


def test_shapes_training_scenes_hold_only_seen_classes():
    ds = ShapesDetection(40, size=64)
    assert ds.classes == _seen_names()
    for i in range(len(ds)):
        t = ds[i]["targets"]
        assert t["labels"].numel() == t["boxes"].shape[0] > 0
        assert int(t["labels"].max()) < len(ds.classes)
    assert sum(ds.skipped.values()) == 0
    # a narrower vocabulary drops the other objects, counted
    with pytest.warns(UserWarning, match="outside the vocabulary"):
        small = ShapesDetection(10, size=64, classes=_seen_names()[:2])
        for i in range(10):
            small[i]
    assert small.skipped["not_in_vocabulary"] > 0
