"""The F-ViT detector with a tiny random CLIP: training lowers the loss, the CLIP stays frozen,
prediction uses any vocabulary, the RoI heads' scores are F-ViT's ensemble; evaluation through
pycocotools; the ``eval-det`` command."""

from __future__ import annotations

import json
import math

import pytest
import torch
from det_threads import one_thread

from ovdense.data import synthetic
from ovdense.data.detection import CocoDetection, detection_collate
from ovdense.modeling.detection import build_fvit, clip_region_probs, geometric_ensemble
from ovdense.modeling.heads import box_features

TINY = dict(
    templates="single",
    scales=(1.0, 0.5),
    min_size=64,
    max_size=64,
    pyramid_channels=16,
    box_convs=0,
    box_fc_dim=32,
    rpn_batch_size_per_image=32,
    rpn_pre_nms_top_n=(200, 100),
    rpn_post_nms_top_n=(100, 50),
    roi_batch_size_per_image=32,
)


def _seen():
    names = synthetic.class_names()
    return [names[i] for i in synthetic.class_groups()["seen"]]


@pytest.fixture(scope="module")
def trained(tiny_clip_factory, det_set):
    clip = tiny_clip_factory(seed=5)
    torch.manual_seed(0)
    det = build_fvit(clip, _seen(), **TINY)
    with pytest.warns(UserWarning):
        ds = CocoDetection(det_set / "instances.json", det_set / "images", classes=_seen())
    empty = next(i for i in range(len(ds)) if ds[i]["image_id"] == 100)
    batch = detection_collate([ds[0], ds[empty]])  # an empty image in every batch
    frozen = {k: v.clone() for k, v in det.backbone.state_dict().items()}
    opt = torch.optim.AdamW([p for p in det.parameters() if p.requires_grad], lr=2e-3)
    det.train()
    losses = []
    with one_thread():
        for _ in range(20):
            out = det(batch)
            loss = sum(out.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return det, losses, frozen, ds


def test_training_lowers_the_loss_and_keeps_clip_frozen(trained):
    det, losses, frozen, _ = trained
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    assert not det.backbone.training  # the frozen tower stays in eval mode
    for k, v in det.backbone.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    assert all(not p.requires_grad for p in det.backbone.parameters())
    assert det.roi_heads.box_predictor.temperature.requires_grad


def test_degenerate_target_boxes_are_dropped_with_a_count(trained):
    det, _, _, ds = trained
    targets = [
        {
            "boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0], [5.0, 5.0, 5.5, 20.0], [9, 9, 2, 2.0]]),
            "labels": torch.tensor([0, 1, 2]),
        }
    ]
    with pytest.warns(UserWarning, match="2 degenerate target boxes"), one_thread():
        losses = det({"images": [ds[0]["image"]], "targets": targets})
    assert all(torch.isfinite(v) for v in losses.values())


def test_predict_any_vocabulary(trained):
    det, _, _, ds = trained
    images = [ds[0]["image"], ds[1]["image"][:, :48, :56]]  # any size
    names = synthetic.class_names()[1:]
    out = det.predict(images, names, is_base=[n in _seen() for n in names])
    assert len(out) == 2
    for o, im in zip(out, images):
        assert o["boxes"].shape[1] == 4 and o["scores"].shape == o["labels"].shape
        h, w = im.shape[-2:]
        if len(o["boxes"]):
            assert float(o["boxes"][:, 2].max()) <= w and float(o["boxes"][:, 3].max()) <= h
            assert int(o["labels"].max()) < len(names) and float(o["scores"].min()) > 0.01
    alone = det.predict(images, names, ensemble=False)
    assert len(alone) == 2
    assert det.training  # predict restores the mode


def test_roi_scores_are_the_ensemble(trained):
    det, _, _, ds = trained
    det.eval()
    heads = det.roi_heads
    saved = heads.score_thresh, heads.nms_thresh, heads.detections_per_img
    heads.score_thresh, heads.nms_thresh, heads.detections_per_img = 0.0, 1.0, 10_000
    try:
        with torch.no_grad():
            image_list, _ = det.transform([ds[0]["image"]])
            feats, dense, stride = det._features(image_list.tensors)
            proposals = [torch.tensor([[2.0, 3.0, 30.0, 40.0], [10.0, 10.0, 50.0, 60.0]])]
            emb = det.encode(["red circle", "blue star", "green cross"])
            is_base = torch.tensor([True, False, False])
            dets, _ = heads(
                feats,
                proposals,
                image_list.image_sizes,
                emb,
                clip_dense=dense,
                clip_stride=stride,
                is_base=is_base,
            )
            roi = heads.box_roi_pool(feats, proposals, image_list.image_sizes)
            cls_feats, deltas = heads.box_head(roi)
            clf = heads.box_predictor
            det_p = clf(cls_feats, emb).softmax(-1)
            clip_p = clip_region_probs(
                box_features(dense, proposals, stride), clf.weights(emb), 75.0
            )
            expected = geometric_ensemble(det_p, clip_p, is_base, 0.1, 0.8)[:, 1:]
            boxes = heads.box_coder.decode(deltas, proposals)[:, 0]
        got = dets[0]
        assert len(got["scores"]) == expected.numel()
        for b, s, k in zip(got["boxes"], got["scores"], got["labels"]):
            n = int(torch.argmin((boxes - b).abs().sum(1)))
            assert float(s) == pytest.approx(float(expected[n, k]), rel=1e-5)
    finally:
        heads.score_thresh, heads.nms_thresh, heads.detections_per_img = saved
        det.train()


def test_eval_det_command(tmp_path, det_set, tiny_clip_config):
    cfg = tmp_path / "tiny_fvit.py"
    cfg.write_text(
        "from ovdense.config import LazyCall as L\n"
        "from ovdense.modeling.clip import load_clip\n"
        "from ovdense.modeling.detection import build_fvit\n"
        f"model = L(build_fvit)(clip=L(load_clip)(config={tiny_clip_config!r}, seed=0),\n"
        f"    train_classes={_seen()!r}, **{TINY!r})\n"
    )
    from ovdense.cli import main

    args = ["eval-det", "--config", str(cfg), "--json", str(det_set / "instances.json")]
    args += ["--images", str(det_set / "images"), "--output", str(tmp_path / "out")]
    with pytest.warns(UserWarning):
        assert main(args) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["images"] == 7 and res["ensemble"] is True
    assert {"AP50_novel", "AP50_base", "AP50_all", "AP"} <= set(res["bbox"])  # shapes split found
