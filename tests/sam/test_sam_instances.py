"""Open-vocabulary labels of masks on shapes scenes (values, not just shapes), the rules of
SamInstanceSegmenter (background, synonyms, scores, NMS, limits), and SAM's real automatic mask
generator end to end with a tiny random SAM."""

import numpy as np
import pytest
import torch
from sam_common import OBJECTS

from ovdense.data.synthetic import class_names
from ovdense.sam import (
    Instances,
    MaskGeneratorOptions,
    SamInstanceSegmenter,
    dense_image_features,
    masks_to_boxes,
)


class FakeGenerator:
    """A mask generator returning given masks (the SamAutomaticMaskGenerator contract)."""

    def __init__(self, masks, ious=None):
        self.masks = masks
        self.ious = ious
        self.calls = 0

    def generate(self, image):
        self.calls += 1
        assert image.dtype == np.uint8 and image.ndim == 3
        out = []
        for i, m in enumerate(self.masks):
            rec = {"segmentation": m, "area": int(m.sum())}
            if self.ious is not None:
                rec["predicted_iou"] = float(self.ious[i])
            out.append(rec)
        return out


def test_ground_truth_masks_get_their_names(shapes_segmentor, scene):
    labeler = SamInstanceSegmenter(shapes_segmentor, nms_iou=None)
    inst = labeler.classify_masks(scene.image, scene.masks, OBJECTS + ["purple cross"])
    assert len(inst) == 3
    assert set(inst.names) == set(OBJECTS)
    # each instance is one of the ground-truth masks, with its own name and box
    for k in range(len(inst)):
        j = next(j for j in range(3) if np.array_equal(scene.masks[j], inst.masks[k]))
        assert inst.names[k] == class_names()[scene.labels[j]]
        np.testing.assert_array_equal(inst.boxes[k], scene.boxes[j])
    assert np.all(np.diff(inst.scores) <= 0)  # by decreasing score
    assert np.all((inst.scores > 0.5) & (inst.scores <= 1.0))
    np.testing.assert_array_equal(inst.scores, inst.class_probs)  # score_mode "prob"
    assert inst.classes == OBJECTS + ["purple cross"]
    assert inst.image_size == (128, 128)


def test_labels_equal_the_region_classifier(shapes_segmentor, scene):
    """The labelling is the region classifier's mask pooling with the segmentor's logit scale
    (bilinear-resized masks; 128 px images are not resized by shapes/maskclip)."""
    from ovdense.modeling.heads import RegionClassifier

    feats, size = dense_image_features(shapes_segmentor, scene.image)
    assert size == (128, 128) and feats.dense.shape[0] == 1
    text = shapes_segmentor.encode_text(OBJECTS)
    with torch.no_grad():
        ref = RegionClassifier()(
            feats,
            text,
            masks=[torch.from_numpy(scene.masks)],
            logit_scale=shapes_segmentor.logit_scale,
        )
    labeler = SamInstanceSegmenter(shapes_segmentor, nms_iou=None, mask_batch=2)
    inst = labeler.classify_masks(scene.image, scene.masks, OBJECTS)
    for k in range(len(inst)):
        j = next(j for j in range(3) if np.array_equal(scene.masks[j], inst.masks[k]))
        assert inst.labels[k] == int(ref["labels"][j])
        assert inst.class_probs[k] == pytest.approx(float(ref["probs"][j].max()), abs=1e-5)


def test_synonyms_background_and_threshold(shapes_segmentor, scene):
    background = scene.label == 0
    masks = np.concatenate([scene.masks, background[None]])
    vocab = ["background|backdrop", "red circle|red disc", "blue square", "green triangle"]
    labeler = SamInstanceSegmenter(shapes_segmentor, nms_iou=None)
    inst = labeler.classify_masks(scene.image, masks, vocab)
    assert inst.background_index == 0
    assert 0 not in inst.labels.tolist()  # masks labelled background are dropped
    assert set(inst.names) == {"red circle", "blue square", "green triangle"}
    # a high threshold sends uncertain masks to the background: they are dropped too
    probs = labeler.classify_masks(scene.image, scene.masks, vocab).class_probs
    thd = float(np.sort(probs)[0]) + 1e-4
    kept = labeler.classify_masks(scene.image, scene.masks, vocab, prob_thd=thd)
    assert len(kept) == len(probs) - 1 and np.all(kept.class_probs >= thd)
    with pytest.raises(ValueError, match="background"):
        labeler.classify_masks(scene.image, scene.masks, OBJECTS, prob_thd=0.5)


def test_score_rule_nms_and_limits(shapes_segmentor, scene):
    circle = int(np.flatnonzero(scene.labels == scene.labels[0])[0])
    m = scene.masks[circle]
    shrunk = m.copy()
    ys, xs = np.nonzero(m)
    shrunk[ys[: len(ys) // 10], xs[: len(xs) // 10]] = False  # a near-duplicate (IoU ~0.9)
    masks = np.stack([*scene.masks, shrunk])
    ious = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    gen = FakeGenerator(masks, ious)
    labeler = SamInstanceSegmenter(shapes_segmentor, mask_generator=gen, score_mode="prob_iou")
    inst = labeler.predict(scene.image, OBJECTS)
    assert gen.calls == 1
    assert len(inst) == 3  # the duplicate went (same class, IoU > 0.5)
    np.testing.assert_allclose(inst.scores, inst.class_probs * inst.sam_iou, rtol=1e-6)
    assert set(inst.sam_iou.tolist()) <= set(ious.tolist())
    no_nms = SamInstanceSegmenter(shapes_segmentor, mask_generator=gen, nms_iou=None)
    assert len(no_nms.predict(scene.image, OBJECTS)) == 4
    # class-agnostic NMS at IoU 0: overlapping masks of different classes suppress each other
    agnostic = SamInstanceSegmenter(
        shapes_segmentor, mask_generator=gen, nms_iou=0.0, class_agnostic_nms=True
    )
    inst0 = agnostic.predict(scene.image, OBJECTS)
    per_class = SamInstanceSegmenter(shapes_segmentor, mask_generator=gen, nms_iou=0.0)
    assert len(inst0) <= len(per_class.predict(scene.image, OBJECTS)) == 3
    top = SamInstanceSegmenter(
        shapes_segmentor, mask_generator=gen, score_mode="prob_iou", max_instances=2
    )
    best = top.predict(scene.image, OBJECTS)
    np.testing.assert_allclose(best.scores, inst.scores[:2])
    strict = SamInstanceSegmenter(shapes_segmentor, mask_generator=gen, min_score=0.999999)
    assert all(s >= 0.999999 for s in strict.predict(scene.image, OBJECTS).scores)
    big = SamInstanceSegmenter(shapes_segmentor, mask_generator=gen, min_area=10**6)
    assert len(big.predict(scene.image, OBJECTS)) == 0


def test_empty_results(shapes_segmentor, scene):
    labeler = SamInstanceSegmenter(shapes_segmentor, mask_generator=FakeGenerator([]))
    inst = labeler.predict(scene.image, OBJECTS)
    assert isinstance(inst, Instances) and len(inst) == 0
    assert inst.masks.shape == (0, 128, 128) and inst.boxes.shape == (0, 4)
    assert inst.class_areas() == {}
    assert (inst.label_map() == -1).all()
    # a mask of no pixel is not classified
    empty = np.zeros((1, 128, 128), bool)
    assert len(labeler.classify_masks(scene.image, empty, OBJECTS)) == 0


def test_errors_say_what_to_do(shapes_segmentor, scene):
    with pytest.raises(ValueError, match="SAM model"):
        SamInstanceSegmenter(shapes_segmentor).predict(scene.image, OBJECTS)
    labeler = SamInstanceSegmenter(shapes_segmentor)
    with pytest.raises(ValueError, match=r"\[K, 128, 128\]"):
        labeler.classify_masks(scene.image, scene.masks[:, :64], OBJECTS)
    with pytest.raises(ValueError, match="score_mode"):
        SamInstanceSegmenter(shapes_segmentor, score_mode="iou")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pred_iou_thresh"):
        MaskGeneratorOptions(pred_iou_thresh=2.0)
    bad = FakeGenerator([np.zeros((5, 5), bool)])
    with pytest.raises(ValueError, match="binary_mask"):
        SamInstanceSegmenter(shapes_segmentor, mask_generator=bad).predict(scene.image, OBJECTS)


def test_label_map_and_class_areas(shapes_segmentor, scene):
    labeler = SamInstanceSegmenter(shapes_segmentor, nms_iou=None)
    inst = labeler.classify_masks(scene.image, scene.masks, OBJECTS)
    lab = inst.label_map()
    assert ((lab >= 0) == scene.masks.any(axis=0)).all()
    areas = inst.class_areas()
    for name, frac in areas.items():
        c = OBJECTS.index(name)
        union = np.any(inst.masks[inst.labels == c], axis=0)
        assert frac == pytest.approx(union.mean())
    np.testing.assert_array_equal(masks_to_boxes(scene.masks), scene.boxes)


def test_real_automatic_mask_generator_with_tiny_sam(shapes_segmentor, scene, small_sam):
    """segment-anything's SamAutomaticMaskGenerator end to end (tiny random SAM: few masks,
    so its quality filters are off)."""
    options = MaskGeneratorOptions(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    labeler = SamInstanceSegmenter(shapes_segmentor, small_sam, options, score_mode="prob_iou")
    raw, iou = labeler.generate_masks(scene.image)
    assert raw.ndim == 3 and raw.shape[1:] == (128, 128) and len(raw) >= 1
    inst = labeler.predict(scene.image, OBJECTS)
    assert 1 <= len(inst) <= len(raw)
    assert inst.masks.dtype == bool and inst.masks.shape[1:] == (128, 128)
    assert all(0 <= lab < 3 for lab in inst.labels)
    np.testing.assert_allclose(
        inst.scores, inst.class_probs * np.clip(inst.sam_iou, 0, 1), rtol=1e-6
    )
    np.testing.assert_array_equal(inst.boxes, masks_to_boxes(inst.masks))
    # the labels are those of the same masks given directly
    again = SamInstanceSegmenter(shapes_segmentor, nms_iou=None).classify_masks(
        scene.image, inst.masks, OBJECTS
    )
    assert sorted(again.labels.tolist()) == sorted(inst.labels.tolist())


def test_chunks_give_the_same_result(shapes_segmentor, scene):
    """Many masks and classes, pooled 7 masks at a time or all at once: same instances."""
    rng = np.random.default_rng(0)
    masks = np.zeros((150, 128, 128), bool)
    for m in masks:
        y, x = rng.integers(0, 100, 2)
        m[y : y + rng.integers(4, 28), x : x + rng.integers(4, 28)] = True
    vocab = class_names()[1:]  # the 30 shapes-world classes
    small = SamInstanceSegmenter(shapes_segmentor, mask_batch=7, progress=False)
    large = SamInstanceSegmenter(shapes_segmentor, mask_batch=1000)
    a = small.classify_masks(scene.image, masks, vocab)
    b = large.classify_masks(scene.image, masks, vocab)
    assert 0 < len(a) == len(b) <= 150
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_array_equal(a.masks, b.masks)
