"""Class groups in the evaluators, COCO instance sets as regions, image-level zero-shot."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovdense.data import synthetic
from ovdense.data.synthetic import class_groups, class_names, generate_scene, write_shapes_det
from ovdense.evaluation.regions import CocoInstances, RegionAccuracy, evaluate_regions
from ovdense.evaluation.sem_seg import SemSegEvaluator, compute_sem_seg_metrics
from ovdense.evaluation.zero_shot import accuracy_by_group, zero_shot_logits
from ovdense.model_zoo import build_segmentor
from ovdense.modeling.text import TextEncoder

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


# --------------------------------------------------------------------------------------------
# Semantic segmentation: mIoU / mAcc per class group
# --------------------------------------------------------------------------------------------


def _brute_force(confusion: np.ndarray, members) -> tuple[float, float]:
    ious, accs = [], []
    k = confusion.shape[0]
    for c in members:
        tp = int(confusion[c, c])
        gt = sum(int(confusion[c, j]) for j in range(k))
        pred = sum(int(confusion[i, c]) for i in range(k))
        if gt + pred - tp > 0:
            ious.append(100.0 * tp / (gt + pred - tp))
        if gt > 0:
            accs.append(100.0 * tp / gt)
    miou = sum(ious) / len(ious) if ious else math.nan
    macc = sum(accs) / len(accs) if accs else math.nan
    return miou, macc


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-12)


def test_group_metrics_match_brute_force():
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 20, size=(6, 6)).astype(np.int64)
    confusion[4, :] = 0  # class 4: predicted but never in the ground truth (IoU 0, no Acc)
    confusion[:, 5] = 0
    confusion[5, :] = 0  # class 5: zero union (skipped by both)
    groups = {"seen": [0, 1, 2], "held_out": [3, 4, 5], "only_empty": [5], "with_bg": (0, 4)}
    res = compute_sem_seg_metrics(confusion, list("abcdef"), class_groups=groups)
    for name, members in groups.items():
        miou, macc = _brute_force(confusion, members)
        assert _same(res[f"mIoU_{name}"], miou), name
        assert _same(res[f"mAcc_{name}"], macc), name
    assert math.isnan(res["mIoU_only_empty"]) and math.isnan(res["mAcc_only_empty"])
    assert res["IoU"]["e"] == 0.0 and math.isnan(res["Acc"]["e"])
    # the whole-set means are unchanged by groups
    plain = compute_sem_seg_metrics(confusion, list("abcdef"))
    assert res["mIoU"] == plain["mIoU"] and res["mAcc"] == plain["mAcc"]
    assert not any(k.startswith("mIoU_") for k in plain)
    # a group of every class reproduces mIoU / mAcc
    every = compute_sem_seg_metrics(confusion, class_groups={"all": range(6)})
    assert every["mIoU_all"] == pytest.approx(plain["mIoU"])
    assert every["mAcc_all"] == pytest.approx(plain["mAcc"])


def test_group_out_of_range_raises():
    confusion = np.eye(3, dtype=np.int64)
    with pytest.raises(ValueError, match="class group"):
        compute_sem_seg_metrics(confusion, class_groups={"g": [3]})


def test_group_negative_index_raises():
    confusion = np.eye(3, dtype=np.int64)
    with pytest.raises(ValueError, match="class group"):
        compute_sem_seg_metrics(confusion, class_groups={"g": [-1]})


def test_evaluator_with_groups():
    rng = np.random.default_rng(1)
    k = 5
    gts = [rng.integers(0, k, size=(7, 9)) for _ in range(3)]
    preds = [np.where(rng.random(g.shape) < 0.6, g, rng.integers(0, k, g.shape)) for g in gts]
    gts[0][0, :4] = 255  # ignored pixels
    groups = {"seen": [1, 2], "held_out": [3, 4]}
    ev = SemSegEvaluator(k, 255, distributed=False, class_groups=groups)
    for p, g in zip(preds, gts):
        ev.process([torch.from_numpy(p)], [torch.from_numpy(g)])
    res = ev.evaluate()["sem_seg"]
    confusion = np.zeros((k, k), np.int64)
    for p, g in zip(preds, gts):
        for a, b in zip(g.ravel(), p.ravel()):
            if a != 255:
                confusion[a, b] += 1
    for name, members in groups.items():
        miou, macc = _brute_force(confusion, members)
        assert res[f"mIoU_{name}"] == pytest.approx(miou)
        assert res[f"mAcc_{name}"] == pytest.approx(macc)
    for bad in ({"g": [5]}, {"g": [-1]}, {"g": [0, 7]}):
        with pytest.raises(ValueError, match="class group 'g'"):
            SemSegEvaluator(k, 255, distributed=False, class_groups=bad)


# --------------------------------------------------------------------------------------------
# CocoInstances on the shapes world's instance set
# --------------------------------------------------------------------------------------------

NUM_IMAGES, SIZE = 4, 64


@pytest.fixture(scope="module")
def shapes_det(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes_det")
    write_shapes_det(folder, num_images=NUM_IMAGES, size=SIZE)
    scenes = [generate_scene(synthetic.VAL_SEED, i, SIZE, "val") for i in range(NUM_IMAGES)]
    return folder / "instances.json", folder / "images", scenes


def test_coco_instances_matches_scenes(shapes_det):
    json_path, images, scenes = shapes_det
    data = CocoInstances(json_path, images)
    assert len(data) == NUM_IMAGES
    assert data.class_names == class_names()[1:]
    assert data.isthing == [True] * 30
    expected_groups = {g: [c - 1 for c in v] for g, v in class_groups().items()}
    assert data.groups == expected_groups
    items = list(data)
    assert len(items) == NUM_IMAGES
    for item, scene, i in zip(items, scenes, range(NUM_IMAGES)):
        assert item.image_path == images / f"{i:05d}.png"
        assert (item.height, item.width) == (SIZE, SIZE)
        assert len(item.segments) == len(scene.labels)
        for seg, mask, box, cls in zip(item.segments, scene.masks, scene.boxes, scene.labels):
            assert seg.category_id == int(cls)
            assert seg.category_index == int(cls) - 1
            assert data.class_names[seg.category_index] == class_names()[cls]
            assert seg.isthing and not seg.iscrowd
            assert seg.mask.dtype == bool
            np.testing.assert_array_equal(seg.mask, mask)
            assert seg.bbox == tuple(float(v) for v in box)
    assert len(CocoInstances(json_path, images, limit=2)) == 2
    assert [it.image_id for it in CocoInstances(json_path, images, limit=2)] == [1, 2]


def test_coco_instances_errors_and_no_groups(shapes_det, tmp_path):
    json_path, images, _ = shapes_det
    with pytest.raises(FileNotFoundError):
        CocoInstances(tmp_path / "none.json", images)
    with pytest.raises(FileNotFoundError):
        CocoInstances(json_path, tmp_path / "none")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(ValueError, match="annotations"):
        CocoInstances(bad, images)
    # categories without held_out flags: no groups
    import json

    data = json.loads(json_path.read_text())
    for c in data["categories"]:
        del c["held_out"]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(data))
    assert CocoInstances(plain, images).groups == {}


def test_region_accuracy_groups_hand_count():
    acc = RegionAccuracy([True, True, False, True], list("abcd"), {"g1": [0, 2], "g2": [1, 3]})
    # (pred, gt): class 0: 2/3 right; class 1: 0/1; class 2: 1/1; class 3: none
    acc.update([0, 0, 1, 3, 2], [0, 0, 0, 1, 2])
    res = acc.compute()
    assert res["g1"]["num_regions"] == 4
    assert res["g1"]["top1"] == pytest.approx(100 * 3 / 4)
    assert res["g1"]["mean_acc"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert res["g1"]["num_classes"] == 2
    assert res["g2"] == {"top1": 0.0, "mean_acc": 0.0, "num_regions": 1, "num_classes": 1}
    assert list(res)[-1] == "per_class"
    empty = RegionAccuracy([True, True], groups={"none": [1]})
    empty.update([0], [0])
    out = empty.compute()["none"]
    assert math.isnan(out["top1"]) and math.isnan(out["mean_acc"]) and out["num_regions"] == 0
    assert set(RegionAccuracy([True]).compute()) == {"things", "stuff", "all", "per_class"}


def test_evaluate_regions_reports_groups(shapes_det, tiny_preset):
    json_path, images, scenes = shapes_det
    data = CocoInstances(json_path, images)
    seg = build_segmentor(tiny_preset("naclip"), device="cpu", short_side=48)
    res = evaluate_regions(
        seg, data, mode=["boxes", "masks"], progress=False, return_predictions=True
    )
    total = sum(len(s.labels) for s in scenes)
    assert res["num_images"] == NUM_IMAGES and res["num_regions"] == total
    assert [p["gt"] for p in res["predictions"]] == [[int(c) - 1 for c in s.labels] for s in scenes]
    for mode in ("boxes", "masks"):
        out = res[mode]
        assert out["seen"]["num_regions"] + out["held_out"]["num_regions"] == total
        assert out["all"]["num_regions"] == total
        pred = [x for p in res["predictions"] for x in p[mode]]
        gt = [x for p in res["predictions"] for x in p["gt"]]
        for group, members in data.groups.items():
            sel = [(p, g) for p, g in zip(pred, gt) if g in members]
            assert out[group]["num_regions"] == len(sel)
            if sel:
                top1 = 100.0 * sum(p == g for p, g in sel) / len(sel)
                assert out[group]["top1"] == pytest.approx(top1)
            else:
                assert math.isnan(out[group]["top1"])


# --------------------------------------------------------------------------------------------
# Image-level zero-shot classification
# --------------------------------------------------------------------------------------------


def _text_embeddings(clip, names, templates):
    """Template-averaged text embeddings, straight from ``encode_text`` (full context)."""
    out = []
    for name in names:
        tokens = clip.ovdense_tokenizer([t.format(name) for t in templates])
        with torch.no_grad():
            emb = F.normalize(clip.encode_text(tokens).float(), dim=-1)
        out.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(out)


def test_zero_shot_logits_direct(tiny_clip):
    torch.manual_seed(0)
    images = torch.rand(5, 3, 32, 32)
    templates = ["a photo of a {}.", "a {}."]
    vocab = [["red circle", "crimson disc"], "blue square", "green star"]
    logits = zero_shot_logits(tiny_clip, images, vocab, templates=templates, batch_size=2)
    assert logits.shape == (5, 3)

    names = ["red circle", "crimson disc", "blue square", "green star"]
    text = _text_embeddings(tiny_clip, names, templates)
    encoder_text = TextEncoder(tiny_clip, templates=templates, progress=False).encode_names(names)
    torch.testing.assert_close(encoder_text, text, atol=1e-5, rtol=1e-5)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        feats = F.normalize(tiny_clip.encode_image((images - mean) / std), dim=-1)
    sims = feats @ text.t()
    expected = torch.stack([torch.maximum(sims[:, 0], sims[:, 1]), sims[:, 2], sims[:, 3]], dim=1)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(sims[:, 0], sims[:, 1])  # the max is doing something

    # explicit normalisation
    m, s = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    other = zero_shot_logits(tiny_clip, images, vocab, templates=templates, mean=m, std=s)
    with torch.no_grad():
        feats2 = F.normalize(tiny_clip.encode_image((images - 0.5) / 0.25), dim=-1)
    sims2 = feats2 @ text.t()
    torch.testing.assert_close(other[:, 1:], sims2[:, 2:], atol=1e-5, rtol=1e-5)


def test_zero_shot_uses_tower_preprocess_cfg(tiny_clip_factory):
    clip = tiny_clip_factory(seed=3)
    clip.visual.preprocess_cfg = {"mean": (0.1, 0.2, 0.3), "std": (0.5, 0.6, 0.7)}
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    got = zero_shot_logits(clip, images, ["a", "b"], templates="single")
    want = zero_shot_logits(
        clip, images, ["a", "b"], templates="single", mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7)
    )
    torch.testing.assert_close(got, want)
    default = zero_shot_logits(
        clip, images, ["a", "b"], templates="single", mean=OPENAI_MEAN, std=OPENAI_STD
    )
    assert not torch.allclose(got, default)


def test_accuracy_by_group():
    pred = torch.tensor([1, 2, 3, 3, 0, 5])
    target = torch.tensor([1, 2, 4, 3, 5, 5])
    res = accuracy_by_group(pred, target, {"a": [1, 2, 3], "b": (4, 5), "none": [7]})
    assert res["all"] == {"acc": pytest.approx(100 * 4 / 6), "n": 6}
    assert res["a"] == {"acc": pytest.approx(100.0), "n": 3}
    assert res["b"] == {"acc": pytest.approx(100 / 3), "n": 3}
    assert res["none"]["n"] == 0 and math.isnan(res["none"]["acc"])
    assert set(accuracy_by_group(pred, target)) == {"all"}
