"""OV-LVIS: the split (rare classes never train), the catalog entries, LVIS's evaluation (against
the official ``lvis`` package when installed, and hand-computed cases), ``eval-det`` on an LVIS
file, and the OV-LVIS training config (a few steps with a tiny model)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from ovdense.data import get_instances_files
from ovdense.data.detection import CocoDetection, detection_collate
from ovdense.data.ov_splits import (
    lvis_frequency_groups,
    lvis_ov_split,
    lvis_v1_classes,
    remove_rare_annotations,
    write_lvis_ov_train,
)
from ovdense.evaluation.lvis import LVIS_STAT_NAMES, LVISEvaluator, lvis_evaluate

W, H = 160, 120
CATS = [  # ids not contiguous, frequencies mixed
    {"id": 2, "name": "ant", "frequency": "r"},
    {"id": 3, "name": "bee", "frequency": "c"},
    {"id": 5, "name": "cat", "frequency": "f"},
    {"id": 8, "name": "dog", "frequency": "r"},
    {"id": 9, "name": "eel", "frequency": "c"},
    {"id": 11, "name": "fox", "frequency": "f"},
]


def _poly(x, y, w, h, kind):
    if kind == 0:  # rectangle
        return [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return [[x, y + h, x + w / 2, y, x + w, y + h]]  # triangle


def synthetic_lvis(seed=0, images=10):
    """An LVIS-like ground truth: polygons of all sizes, positive / negative / not-exhaustive
    category lists per image, COCO-URL image paths."""
    rng = np.random.default_rng(seed)
    ids = [c["id"] for c in CATS]
    imgs, anns = [], []
    for i in range(1, images + 1):
        present = sorted(rng.choice(ids, size=rng.integers(1, 4), replace=False).tolist())
        for c in present:
            for _ in range(int(rng.integers(1, 4))):
                w, h = (float(v) for v in rng.choice([8, 20, 50, 110], 2) * rng.uniform(0.8, 1, 2))
                x, y = float(rng.uniform(0, W - w)), float(rng.uniform(0, H - h))
                segm = _poly(x, y, w, h, int(rng.integers(2)))
                rle = mask_utils.merge(mask_utils.frPyObjects(segm, H, W))
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": i,
                        "category_id": c,
                        "bbox": [x, y, w, h],
                        "area": float(mask_utils.area(rle)),
                        "segmentation": segm,
                    }
                )
        absent = [c for c in ids if c not in present]
        neg = sorted(rng.choice(absent, size=min(2, len(absent)), replace=False).tolist())
        imgs.append(
            {
                "id": i,
                "width": W,
                "height": H,
                "coco_url": f"http://images.cocodataset.org/val2017/{i:012d}.jpg",
                "neg_category_ids": neg,
                "not_exhaustive_category_ids": present[:1] if i % 3 == 0 else [],
            }
        )
    return {"images": imgs, "annotations": anns, "categories": copy.deepcopy(CATS)}


def synthetic_detections(gt, seed=0, extra=25):
    """Jittered annotations (box + mask) and false positives of every category; rounded scores
    so that ties happen."""
    rng = np.random.default_rng(seed)
    ids = [c["id"] for c in CATS]
    dets = []

    def add(i, c, x, y, w, h, kind):
        x, y = max(0.0, x), max(0.0, y)
        w, h = max(1.0, min(w, W - x)), max(1.0, min(h, H - y))
        rle = mask_utils.merge(mask_utils.frPyObjects(_poly(x, y, w, h, kind), H, W))
        rle["counts"] = rle["counts"].decode("ascii")
        score = round(float(rng.uniform(0.05, 1.0)), 2)
        dets.append(
            {"image_id": i, "category_id": c, "bbox": [x, y, w, h], "score": score,
             "segmentation": rle}
        )  # fmt: skip

    for a in gt["annotations"]:
        if rng.uniform() < 0.85:
            x, y, w, h = a["bbox"]
            j = rng.normal(0, 0.08, 4) * np.array([w, h, w, h])
            add(a["image_id"], a["category_id"], x + j[0], y + j[1], w + j[2], h + j[3], 0)
    for img in gt["images"]:
        for _ in range(extra):
            w, h = rng.uniform(5, 100, 2)
            x, y = rng.uniform(0, W - 5), rng.uniform(0, H - 5)
            add(img["id"], int(rng.choice(ids)), x, y, w, h, int(rng.integers(2)))
    order = rng.permutation(len(dets))
    return [dets[k] for k in order]


# ------------------------------------------------------------------------------ the split
def test_ov_split_is_rare_vs_the_rest():
    names = lvis_v1_classes()
    base, novel = lvis_ov_split()
    assert len(names) == len(set(names)) == 1203
    assert (len(base), len(novel)) == (866, 337)
    assert not set(base) & set(novel) and set(base) | set(novel) == set(names)
    assert base == [n for n in names if n in set(base)]  # id order
    assert "applesauce" in novel and "aerosol_can" in base and "zucchini" in base


def test_frequency_groups_and_rare_removal(tmp_path):
    gt = synthetic_lvis()
    assert lvis_frequency_groups(gt["categories"]) == {
        "r": ["ant", "dog"],
        "c": ["bee", "eel"],
        "f": ["cat", "fox"],
    }
    with pytest.raises(ValueError, match="frequency"):
        lvis_frequency_groups([{"id": 1, "name": "x"}])
    out = remove_rare_annotations(gt)
    rare = {2, 8}
    assert not any(a["category_id"] in rare for a in out["annotations"])
    assert len(out["annotations"]) == sum(a["category_id"] not in rare for a in gt["annotations"])
    assert out["categories"] == gt["categories"] and out["images"] == gt["images"]
    assert any(a["category_id"] in rare for a in gt["annotations"])  # input untouched
    (tmp_path / "t.json").write_text(json.dumps(gt))
    kept, removed = write_lvis_ov_train(tmp_path / "t.json", tmp_path / "o.json")
    assert kept + removed == len(gt["annotations"]) and removed > 0
    assert json.loads((tmp_path / "o.json").read_text()) == out


def _write_lvis_layout(root, gt):
    (root / "lvis_v1" / "annotations").mkdir(parents=True)
    (root / "lvis_v1" / "val2017").mkdir()
    for img in gt["images"]:
        Image.new("RGB", (W, H), (30, 60, 90)).save(
            root / "lvis_v1" / "val2017" / f"{img['id']:012d}.jpg"
        )
    (root / "lvis_v1" / "annotations" / "lvis_v1_val.json").write_text(json.dumps(gt))


def test_catalog_and_training_data_never_target_rare_classes(tmp_path):
    gt = synthetic_lvis()
    _write_lvis_layout(tmp_path, gt)
    json_path, images = get_instances_files("lvis_v1_val", tmp_path)
    assert json_path == tmp_path / "lvis_v1" / "annotations" / "lvis_v1_val.json"
    with pytest.raises(FileNotFoundError, match="lvis_v1_train_seen_1203_cat.json"):
        get_instances_files("lvis_v1_train_norare", tmp_path)
    freq = lvis_frequency_groups(gt["categories"])
    base = [c["name"] for c in CATS if c["frequency"] != "r"]
    with pytest.warns(UserWarning, match="not in the vocabulary"):
        ds = CocoDetection(
            json_path, images, classes=base, with_masks=True, novel_classes=freq["r"]
        )
    assert ds.skipped["not_in_vocabulary"] == sum(
        a["category_id"] in (2, 8) for a in gt["annotations"]
    )
    n_targets = 0
    for i in range(len(ds)):
        t = ds[i]["targets"]
        assert all(base[int(k)] not in freq["r"] for k in t["labels"])
        assert t["masks"].shape == (len(t["labels"]), H, W) and t["masks"].dtype == torch.uint8
        n_targets += len(t["labels"])
        # a mask lies inside its box (polygons rasterised by pycocotools)
        for b, m in zip(t["boxes"], t["masks"], strict=True):
            ys, xs = torch.nonzero(m, as_tuple=True)
            if len(xs):
                assert xs.min() >= b[0] - 1 and xs.max() <= b[2] + 1
    assert n_targets == len(gt["annotations"]) - ds.skipped["not_in_vocabulary"]
    assert ds[0]["image"].shape == (3, H, W)  # found through coco_url -> val2017/<id>.jpg
    with pytest.raises(ValueError, match="novel classes"):
        CocoDetection(json_path, images, classes=[*base, "ant"], novel_classes=freq["r"])


# ------------------------------------------------------------------------------ evaluation
def _run_official(gt, dets, iou_type, max_dets, tmp_path, monkeypatch):
    lvis = pytest.importorskip("lvis")
    monkeypatch.setattr(np, "float", float, raising=False)  # lvis 0.5.3 predates numpy 1.24
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    lgt = lvis.LVIS(str(path))
    ldt = lvis.LVISResults(lgt, copy.deepcopy(dets), max_dets=max_dets)
    ev = lvis.LVISEval(lgt, ldt, iou_type)
    ev.run()
    return ev


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("max_dets", [300, 12])
def test_equals_the_official_lvis_eval(tmp_path, monkeypatch, iou_type, max_dets):
    gt = synthetic_lvis(seed=1)
    dets = synthetic_detections(gt, seed=2)
    ref = _run_official(gt, dets, iou_type, max_dets, tmp_path, monkeypatch)
    ours = lvis_evaluate(gt, dets, iou_type, max_dets)
    np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.recall, ref.eval["recall"], rtol=0, atol=1e-12)
    for name in LVIS_STAT_NAMES:
        assert ours.stats[name] == pytest.approx(float(ref.results[name]), abs=1e-12), name
    assert 0 < ours.stats["AP"] < 1 and ours.stats["APr"] > 0  # a non-trivial case


def test_evaluator_on_a_subset_of_images_equals_the_official(tmp_path, monkeypatch):
    lvis = pytest.importorskip("lvis")
    gt = synthetic_lvis(seed=3)
    dets = synthetic_detections(gt, seed=4)
    keep = [1, 2, 5, 6, 9]
    monkeypatch.setattr(np, "float", float, raising=False)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    lgt = lvis.LVIS(str(tmp_path / "gt.json"))
    ev = lvis.LVISEval(lgt, lvis.LVISResults(lgt, copy.deepcopy(dets)), "segm")
    ev.params.img_ids = keep
    ev.run()
    # the evaluator: tensors in, RLE masks encoded from [M, 1, H, W] probabilities
    names = {c["id"]: c["name"] for c in CATS}
    classes = [c["name"] for c in CATS]
    evaluator = LVISEvaluator(gt, classes, iou_types=("bbox", "segm"))
    for i in keep:
        mine = [d for d in dets if d["image_id"] == i]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in mine)])
        masks = (
            torch.from_numpy(
                np.stack([mask_utils.decode(d["segmentation"]) for d in mine]).astype(np.float32)
            )[:, None]
            * 0.7
        )  # probabilities: >= 0.5 is the mask
        evaluator.process(
            [i],
            [
                {
                    "boxes": boxes.double(),
                    "scores": torch.tensor([d["score"] for d in mine], dtype=torch.float64),
                    "labels": torch.tensor([classes.index(names[d["category_id"]]) for d in mine]),
                    "masks": masks,
                }
            ],
        )
    res = evaluator.evaluate()
    for name in ("AP", "APr", "APc", "APf", "AR@300"):
        assert res["segm"][name] == pytest.approx(100 * float(ev.results[name]), abs=1e-9), name
    assert set(res) == {"bbox", "segm"}


def _tiny_gt(neg=(), not_exhaustive=()):
    cats = [{"id": 1, "name": "a", "frequency": "r"}, {"id": 2, "name": "b", "frequency": "f"}]
    img = {"id": 1, "width": 100, "height": 100, "neg_category_ids": list(neg),
           "not_exhaustive_category_ids": list(not_exhaustive)}  # fmt: skip
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100.0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "area": 400.0},
    ]
    return {"images": [img], "annotations": anns, "categories": cats}


def _det(cat, box, score):
    return {"image_id": 1, "category_id": cat, "bbox": box, "score": score}


def test_hand_computed_ap_and_the_federated_rules():
    # TP (0.9), FP (0.8), TP (0.7): precision 1 up to recall 0.5, then 2/3 up to recall 1
    dets = [_det(1, [0, 0, 10, 10], 0.9), _det(1, [30, 0, 10, 10], 0.8)]
    dets += [_det(1, [50, 50, 20, 20], 0.7)]
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    res = lvis_evaluate(_tiny_gt(), dets)
    assert res.stats["AP"] == pytest.approx(expected, abs=1e-9)
    assert res.stats["APr"] == pytest.approx(expected, abs=1e-9)
    assert math.isclose(res.stats["APf"], -1) and math.isclose(res.stats["APc"], -1)
    # category 2 is neither annotated nor negative in the image: its detections are dropped
    more = dets + [_det(2, [0, 0, 10, 10], 0.95)]
    assert lvis_evaluate(_tiny_gt(), more).stats["AP"] == pytest.approx(expected, abs=1e-9)
    # not exhaustive: the unmatched detection (0.8) is ignored -> precision 1 everywhere
    res = lvis_evaluate(_tiny_gt(not_exhaustive=[1]), dets)
    assert res.stats["AP"] == pytest.approx(1.0, abs=1e-9)
    # at most max_dets per image, the best scores kept: 0.9 and 0.8 -> recall 0.5
    res = lvis_evaluate(_tiny_gt(), dets, max_dets=2)
    assert res.stats["AP"] == pytest.approx(51 / 101, abs=1e-9)
    assert res.stats["AR@300"] == pytest.approx(0.5, abs=1e-9)


def test_evaluator_refuses_what_it_cannot_score():
    gt = _tiny_gt()
    with pytest.raises(ValueError, match="not among"):
        LVISEvaluator(gt, ["a", "zebra"])
    ev = LVISEvaluator(gt, ["a", "b"], iou_types=("bbox", "segm"))
    out = {"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.zeros(1).long()}
    with pytest.raises(ValueError, match="masks"):
        ev.process([1], [out])
    with pytest.raises(ValueError, match="frequency"):
        lvis_evaluate({**gt, "categories": [{"id": 1, "name": "a"}]}, [])


# ------------------------------------------------------------------------------ the config
def test_ovlvis_config_builds_and_trains_a_few_steps(tmp_path, tiny_clip_config):
    from ovdense.config import LazyConfig
    from ovdense.engine import Trainer

    cfg = LazyConfig.load("ovdense/configs/train/fvit_vitb16_ovlvis.py")
    m = cfg.model
    assert (m.min_size, m.rpn_norm, m.mask_head, m.background_weight) == (1024, True, True, 0.9)
    assert (m.clip_temperature, m.alpha, m.beta, m.detections_per_img) == (50.0, 0.1, 0.6, 300)
    jitter = cfg.dataloader.dataset
    assert (jitter.size, tuple(jitter.ratio_range), jitter.flip, m.train_size) == (
        1024,
        (0.1, 2.0),
        0.5,
        1024,
    )
    assert len(m.train_classes) == 866 and jitter.dataset.with_masks
    assert set(jitter.dataset.novel_classes) == set(lvis_ov_split()[1])
    assert cfg.train.max_iter == 75127 and cfg.lr_scheduler.steps == [50085, 68866]

    gt = synthetic_lvis(seed=5, images=4)
    _write_lvis_layout(tmp_path, gt)
    train_json = tmp_path / "lvis_v1" / "annotations" / "train.json"
    write_lvis_ov_train(tmp_path / "lvis_v1" / "annotations" / "lvis_v1_val.json", train_json)
    base = [c["name"] for c in CATS if c["frequency"] != "r"]
    cfg.model.clip = {"_target_": "ovdense.modeling.clip.load_clip",
                      "config": tiny_clip_config, "seed": 0}  # fmt: skip
    cfg.model.update(
        train_classes=base, templates="single", scales=(1.0, 0.5), min_size=64, max_size=64,
        pyramid_channels=16, box_convs=0, box_fc_dim=32, mask_convs=1, out_indices=None,
        rpn_batch_size_per_image=32, rpn_pre_nms_top_n=(200, 100),
        rpn_post_nms_top_n=(100, 50), roi_batch_size_per_image=32, train_size=96,
    )  # fmt: skip
    cfg.dataloader.dataset.update(size=96, ratio_range=(0.3, 1.2))
    ds = cfg.dataloader.dataset.dataset
    ds.update(json_path=str(train_json), image_dir=str(tmp_path / "lvis_v1"), classes=base)
    ds.novel_classes = ["ant", "dog"]
    cfg.dataloader.update(batch_size=2, num_workers=0)
    cfg.lr_scheduler.steps = [2]
    cfg.train.update(max_iter=3, amp=False, device="cpu", output_dir=str(tmp_path / "run"))
    cfg.train.checkpoint_period = 3
    trainer = Trainer(cfg)
    trainer.train()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows and all(math.isfinite(r["loss"]) for r in rows)
    assert any("loss_mask" in r for r in rows)
    batch = detection_collate([trainer.loader.dataset[0]])
    assert "masks" in batch["targets"][0] and max(batch["images"][0].shape[-2:]) <= 96


def test_eval_det_detects_an_lvis_file(tmp_path, tiny_clip_config):
    gt = synthetic_lvis(seed=6, images=3)
    _write_lvis_layout(tmp_path, gt)
    cfg = tmp_path / "tiny_fvit.py"
    cfg.write_text(
        "from ovdense.config import LazyCall as L\n"
        "from ovdense.modeling.clip import load_clip\n"
        "from ovdense.modeling.detection import build_fvit\n"
        f"model = L(build_fvit)(clip=L(load_clip)(config={tiny_clip_config!r}, seed=0),\n"
        "    train_classes=['bee', 'cat'], templates='single', scales=(1.0, 0.5),\n"
        "    min_size=64, max_size=64, pyramid_channels=16, box_convs=0, box_fc_dim=32,\n"
        "    mask_head=True, mask_convs=1, score_thresh=1e-4, detections_per_img=300)\n"
    )
    from ovdense.cli import main

    out = tmp_path / "out"
    args = ["eval-det", "--config", str(cfg), "--dataset", "lvis_v1_val"]
    assert main([*args, "--data-root", str(tmp_path), "--output", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res) >= {"bbox", "segm"} and res["images"] == 3
    for kind in ("bbox", "segm"):
        assert {"AP", "APr", "APc", "APf", "AP50_novel", "AP50_base"} <= set(res[kind])
        assert len(res[kind]["per_class_AP"]) == len(CATS)


# ------------------------------------------------------------------------------ jitter
class _Items(torch.utils.data.Dataset):
    """One 120x160 item: a ramp image (every pixel distinct) and two rectangle masks."""

    def __len__(self):
        return 1

    def __getitem__(self, i):
        h, w = 120, 160
        ramp = torch.arange(h * w, dtype=torch.float32).reshape(h, w) / (h * w)
        masks = torch.zeros(2, h, w, dtype=torch.uint8)
        masks[0, 8:40, 16:64] = 1
        masks[1, 100:120, 140:160] = 1
        boxes = torch.tensor([[16.0, 8.0, 64.0, 40.0], [140.0, 100.0, 160.0, 120.0]])
        return {
            "image": ramp.expand(3, h, w).clone(),
            "targets": {"boxes": boxes, "labels": torch.tensor([3, 5]), "masks": masks},
            "image_id": 7,
        }


def test_large_scale_jitter_scales_crops_and_flips():
    from ovdense.data.augment import LargeScaleJitter

    # scale 80 * 0.5 / 160 = 0.25, no crop (30 x 40 <= 80): the rectangles scale exactly
    out = LargeScaleJitter(_Items(), size=80, ratio_range=(0.5, 0.5), flip=0.0)[0]
    assert out["image"].shape == (3, 30, 40) and out["image_id"] == 7
    expected = torch.tensor([[4.0, 2, 16, 10], [35, 25, 40, 30]])
    torch.testing.assert_close(out["targets"]["boxes"], expected)
    assert out["targets"]["masks"].shape == (2, 30, 40)
    # scale 1, a random 80 x 80 crop: find it from the ramp, boxes = clipped tight boxes
    for seed in range(5):
        torch.manual_seed(seed)  # scale 80 * 2 / 160 = 1
        item = LargeScaleJitter(_Items(), size=80, ratio_range=(2.0, 2.0), flip=0.0)[0]
        img = item["image"][0]
        assert img.shape == (80, 80)
        first = int(round(float(img[0, 0]) * 120 * 160))
        y0, x0 = divmod(first, 160)
        expected = []
        for x1, y1, x2, y2 in ([16, 8, 64, 40], [140, 100, 160, 120]):
            bx1, by1 = max(x1 - x0, 0), max(y1 - y0, 0)
            bx2, by2 = min(x2 - x0, 80), min(y2 - y0, 80)
            if bx2 - bx1 > 0.01 and by2 - by1 > 0.01:
                expected.append([bx1, by1, bx2, by2])
        got = item["targets"]["boxes"]
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32).reshape(-1, 4))
        assert len(item["targets"]["labels"]) == len(expected) == len(item["targets"]["masks"])
    # a flip mirrors the boxes (same random draws otherwise)
    torch.manual_seed(3)
    plain = LargeScaleJitter(_Items(), size=80, ratio_range=(0.5, 1.5), flip=0.0)[0]
    torch.manual_seed(3)
    flipped = LargeScaleJitter(_Items(), size=80, ratio_range=(0.5, 1.5), flip=1.0)[0]
    cw = plain["image"].shape[-1]
    b = plain["targets"]["boxes"]
    mirrored = torch.stack([cw - b[:, 2], b[:, 1], cw - b[:, 0], b[:, 3]], 1)
    torch.testing.assert_close(flipped["targets"]["boxes"], mirrored)
    torch.testing.assert_close(flipped["image"], plain["image"].flip(-1))


def test_train_size_keeps_jittered_images_unresized(tiny_clip_factory):
    from ovdense.modeling.detection import build_fvit

    det = build_fvit(
        tiny_clip_factory(seed=1), ["bee"], templates="single", scales=(1.0, 0.5),
        pyramid_channels=16, box_convs=0, box_fc_dim=32, train_size=96,
    )  # fmt: skip
    t = {"boxes": torch.tensor([[1.0, 1.0, 20.0, 20.0]]), "labels": torch.tensor([1])}
    det.train()
    images, targets = det.transform([torch.rand(3, 50, 70)], [t])
    d = det.transform.size_divisible
    side = -(-96 // d) * d
    assert images.image_sizes == [(50, 70)] and images.tensors.shape[-2:] == (side, side)
    torch.testing.assert_close(targets[0]["boxes"], t["boxes"])
    with pytest.raises(ValueError, match="train_size"):
        det.transform([torch.rand(3, 50, 100)], [t])
    det.eval()
    images, _ = det.transform([torch.rand(3, 50, 70)])
    assert images.image_sizes != [(50, 70)]  # evaluation resizes as before
