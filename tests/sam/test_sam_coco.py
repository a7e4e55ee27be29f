"""COCO results JSON with RLE masks: round trip through pycocotools' COCO API."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from sam_common import OBJECTS

from ovdense.sam import (
    SamInstanceSegmenter,
    coco_categories,
    decode_rle,
    encode_rle,
    instances_document,
    instances_to_coco,
)
from ovdense.vocabulary import Vocabulary


def test_rle_round_trip_random_masks():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 13), (64, 48)]:
        for density in (0.0, 0.3, 1.0):
            m = rng.random(shape) < density
            rle = encode_rle(m)
            assert isinstance(rle["counts"], str) and rle["size"] == list(shape)
            text = json.loads(json.dumps(rle))  # JSON-safe
            np.testing.assert_array_equal(decode_rle(text), m)
            assert mask_utils.area({"size": rle["size"], "counts": rle["counts"]}) == m.sum()
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        encode_rle(np.zeros((2, 3, 4), bool))


def test_categories_skip_background_and_keep_synonyms():
    vocab = Vocabulary(["background", "red circle|red disc", "blue square"])
    cats = coco_categories(vocab)
    assert cats == [
        {"id": 2, "name": "red circle", "synonyms": ["red circle", "red disc"]},
        {"id": 3, "name": "blue square", "synonyms": ["blue square"]},
    ]


def test_results_load_back_with_the_coco_api(shapes_segmentor, scene, tmp_path):
    labeler = SamInstanceSegmenter(shapes_segmentor, nms_iou=None)
    vocab = ["background", *OBJECTS]
    inst = labeler.classify_masks(scene.image, scene.masks, vocab)
    assert len(inst) == 3
    doc = instances_document(inst, image="scene.png", image_id=7)
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(doc))
    doc = json.loads(path.read_text())
    assert doc["height"] == doc["width"] == 128 and doc["image"] == "scene.png"
    assert [c["name"] for c in doc["categories"]] == OBJECTS  # background left out
    assert set(doc["present"]) == set(OBJECTS)
    for name, frac in doc["present"].items():
        c = vocab.index(name)
        assert frac == pytest.approx(np.any(inst.masks[inst.labels == c], axis=0).mean(), abs=1e-5)
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 7, "height": 128, "width": 128, "file_name": "scene.png"}],
        "categories": doc["categories"],
        "annotations": [],
    }
    gt.createIndex()
    ours = json.loads(json.dumps(doc["instances"]))  # loadRes edits its input
    for k, ann in enumerate(ours):
        assert ann["area"] == inst.masks[k].sum()  # pixels (loadRes puts the box area there)
    res = gt.loadRes(doc["instances"])
    anns = res.loadAnns(res.getAnnIds(imgIds=[7]))
    assert len(anns) == 3
    for k, ann in enumerate(anns):
        np.testing.assert_array_equal(res.annToMask(ann).astype(bool), inst.masks[k])
        assert ann["category_id"] == int(inst.labels[k]) + 1
        assert ann["category_name"] == inst.names[k]
        assert ann["score"] == pytest.approx(float(inst.scores[k]), abs=1e-6)
        # COCO's own box of the RLE equals ours
        np.testing.assert_allclose(mask_utils.toBbox(ann["segmentation"]), ann["bbox"])


def test_empty_document(shapes_segmentor, scene):
    labeler = SamInstanceSegmenter(shapes_segmentor)
    inst = labeler.classify_masks(scene.image, np.zeros((0, 128, 128), bool), OBJECTS)
    doc = json.loads(json.dumps(instances_document(inst, image="x.png")))
    assert doc["instances"] == [] and doc["present"] == {}
    assert len(doc["categories"]) == 3
    assert instances_to_coco(inst) == []
