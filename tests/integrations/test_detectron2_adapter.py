"""ovdense inside detectron2: the backbone's ``output_shape()`` against its outputs, the text box
predictor against the cosine formula (and a class never trained on named at test time), F-ViT's
ensemble, detectron2's trainer lowering the loss from the shipped LazyConfig, the evaluator
bridge against pycocotools and detectron2's own ``COCOEvaluator``, the dataset registrations,
the segmentation head, the yacs registry route. Skipped where detectron2 is not installed (CI
installs it from the wheel when the wheel is there: .ci/run)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("detectron2")

from detectron2.config import LazyCall as L  # noqa: E402
from detectron2.config import get_cfg, instantiate  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import SemanticSegmentor, build_model  # noqa: E402
from detectron2.modeling.box_regression import Box2BoxTransform  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

import ovdense.integrations.detectron2 as od  # noqa: E402
from ovdense.config import LazyConfig as OVLazyConfig  # noqa: E402
from ovdense.data import synthetic  # noqa: E402
from ovdense.data.ov_splits import COCO_OV_BASE, COCO_OV_NOVEL, coco_ov_classes  # noqa: E402
from ovdense.evaluation.detection import COCO_STAT_NAMES, COCODetectionEvaluator  # noqa: E402
from ovdense.modeling.backbones.clip_vit import dense_backbone_for  # noqa: E402
from ovdense.modeling.clip import load_clip  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NAMES = synthetic.class_names()
SEEN = [NAMES[i] for i in synthetic.class_groups()["seen"]]
HELD = [NAMES[i] for i in synthetic.class_groups()["held_out"]]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # small CPU loops on a loaded machine: OpenMP barriers cost more than they give (the
    # 24-step training below took 7x longer on two threads); module scope: before `trained`
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _register(name: str, json_file: Path, image_root: Path, classes, base=None, novel=()):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    od.register_ov_coco_instances(name, (json_file, image_root), classes, base, novel)


@pytest.fixture(scope="module")
def shapes_sets(tmp_path_factory):
    """Two small COCO-format shapes sets at 64 px: ``train`` (the training distribution,
    registered with the 24 seen classes) and ``val`` (all 30, the held-out ones novel)."""
    root = tmp_path_factory.mktemp("d2_shapes")
    synthetic.write_shapes_det(root / "train", num_images=8, seed=0, size=64, split="train")
    synthetic.write_shapes_det(root / "val", num_images=4, seed=1, size=64)
    for split, classes, base, novel in (
        ("train", SEEN, SEEN, ()),
        ("val", NAMES[1:], SEEN, HELD),
    ):
        f = root / split
        _register(f"test_shapes_{split}", f / "instances.json", f / "images", classes, base, novel)
    # the val images with the seen classes as the vocabulary (held-out annotations left out)
    f = root / "val"
    _register("test_shapes_val_base", f / "instances.json", f / "images", SEEN)
    return root


# -- backbone -------------------------------------------------------------------------------------
def test_backbone_output_shape_matches_its_outputs(tiny_clip_factory):
    clip = tiny_clip_factory(seed=1)  # patch 8, 3 blocks, width 64, embed 32
    bb = od.OVDenseCLIPBackbone(clip, strategy="maskclip", scales=(4.0, 2.0, 1.0, 0.5))
    shapes = bb.output_shape()
    assert list(shapes) == ["p1", "p2", "p3", "p4", "p5", "clip_dense"]
    assert bb.size_divisibility == 32
    x = torch.randn(2, 3, 64, 96)
    out = bb(x)
    assert list(out) == list(shapes)
    for name, spec in shapes.items():
        assert out[name].shape == (2, spec.channels, 64 // spec.stride, 96 // spec.stride), name
    assert shapes["clip_dense"].channels == 32 and shapes["p3"].channels == 256
    # the dense map is ovdense's dense CLIP output, the taps F-ViT's default for 3 blocks
    ref = dense_backbone_for(clip.visual, "maskclip")(x).dense
    torch.testing.assert_close(out["clip_dense"], ref)
    assert bb.out_indices == (2, 2, 2, 2)
    # frozen: no gradient into the CLIP, the pyramid trains
    out["p2"].sum().backward()
    assert all(p.grad is None for p in bb.clip.parameters())
    assert any(p.grad is not None for p in bb.pyramid.parameters())
    stats = od.clip_pixel_stats(bb)
    assert stats["pixel_mean"] == pytest.approx([255 * m for m in bb.mean])


def test_backbone_refuses_strides_the_pooler_cannot_use(tiny_clip_factory):
    clip = tiny_clip_factory(
        seed=1,
        vision_cfg={"image_size": 36, "layers": 2, "width": 64, "head_width": 16, "patch_size": 12},
    )
    with pytest.raises(ValueError, match="powers of two"):
        od.OVDenseCLIPBackbone(clip, scales=(2.0, 1.0))
    dense_only = od.OVDenseCLIPBackbone(clip, scales=())
    assert list(dense_only.output_shape()) == ["clip_dense"]
    assert dense_only.size_divisibility == 12


# -- box predictor --------------------------------------------------------------------------------
def _predictor(k: int = 4, d: int = 16, c: int = 24, **kw) -> od.TextFastRCNNOutputLayers:
    torch.manual_seed(0)
    return od.TextFastRCNNOutputLayers(
        ShapeSpec(channels=c),
        box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
        class_embeds=torch.randn(k, d),
        background_embed=torch.randn(d),
        temperature=30.0,
        **kw,
    )


def test_predictor_scores_are_the_cosine_formula():
    pred = _predictor(reg_fc_dim=8)
    x = torch.randn(5, 24)
    scores, deltas = pred(x)
    f = F.relu(x @ pred.cls_fc.weight.T + pred.cls_fc.bias)
    cols = [*pred.train_class_embeds, pred.classifier.background]  # background last
    expected = torch.stack(
        [pred.classifier.temperature * F.cosine_similarity(f, e[None], dim=1) for e in cols], 1
    )
    torch.testing.assert_close(scores, expected)
    assert deltas.shape == (5, 4)  # class-agnostic
    assert pred.classifier.temperature.requires_grad and pred.classifier.background.requires_grad
    # the vocabulary is not in the checkpoint: it comes from the config / set_vocabulary
    assert not any("embeds" in k or "is_base" in k for k in pred.state_dict())


def test_a_class_never_trained_on_is_named_at_test_time():
    pred = _predictor().eval()
    x = torch.randn(3, 24)
    f = F.relu(pred.cls_fc(x))
    novel = f[1].detach()  # a new class whose text embedding points at RoI 1's features
    vocab = torch.cat([pred.train_class_embeds, novel[None]])
    with pred.vocabulary(vocab, is_base=[True] * 4 + [False]):
        scores, deltas = pred(x)
        assert scores.shape == (3, 6)
        assert int(scores[1, :-1].argmax()) == 4  # cosine 1 with its own features
        boxes = Boxes(torch.tensor([[0, 0, 20, 20], [10, 10, 50, 40], [5, 30, 30, 60.0]]))
        proposal = Instances((64, 64), proposal_boxes=boxes)
        pred.test_score_thresh = 0.0
        (inst,), _ = pred.inference((scores, deltas), [proposal])
        top = inst[int(inst.scores.argmax())]
        assert int(top.pred_classes) == 4
        assert top.pred_boxes.tensor.shape == (1, 4)
    assert pred.class_embeds.shape[0] == 4  # restored after the block
    pred.train()
    assert pred(x)[0].shape == (3, 5)  # training always uses the training vocabulary


def test_background_weighted_loss_and_a_clear_error_on_foreign_labels():
    pred = _predictor(background_weight=0.6)
    x = torch.randn(6, 24)
    boxes = Boxes(torch.tensor([[0, 0, 20, 20.0]] * 6))
    gt = torch.tensor([0, 1, 4, 4, 3, 4])  # 4 = background
    props = [Instances((64, 64), proposal_boxes=boxes, gt_classes=gt, gt_boxes=boxes)]
    scores, deltas = pred(x)
    with EventStorage():
        losses = pred.losses((scores, deltas), props)
    w = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.6])
    ce = -(F.log_softmax(scores, 1)[torch.arange(6), gt] * w[gt]).sum() / 6
    torch.testing.assert_close(losses["loss_cls"], ce)
    props[0].gt_classes = torch.tensor([0, 1, 7, 4, 3, 4])
    with EventStorage(), pytest.raises(ValueError, match="training vocabulary has 4"):
        pred.losses((scores, deltas), props)


def test_ensemble_is_fvit_geometric_mean_with_background_last():
    pred = _predictor(clip_temperature=75.0, alpha=0.1, beta=0.8).eval()
    pred.set_vocabulary(pred.train_class_embeds, is_base=[True, False, True, False])
    probs = torch.rand(3, 5).softmax(1)
    region = torch.randn(3, 16)
    out = pred.ensemble_probs(probs, region)
    cols = torch.stack([*pred.class_embeds, F.normalize(pred.classifier.background, dim=0)])
    clip = (75.0 * F.normalize(region, dim=1) @ F.normalize(cols, dim=1).T).softmax(1)
    w = torch.tensor([0.1, 0.8, 0.1, 0.8, 0.1])  # background: alpha
    torch.testing.assert_close(out, probs ** (1 - w) * clip**w)


# -- training with detectron2's trainer from the shipped LazyConfig --------------------------------
@pytest.fixture(scope="module")
def trained(shapes_sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("d2_train")
    cfg = od.load_config(
        "fvit_shapes",
        [
            "dataloader.train.dataset.names=test_shapes_train",
            "dataloader.train.total_batch_size=2",
            "dataloader.test.dataset.names=test_shapes_val",
            "train.max_iter=24",
            "train.eval_period=24",
            "model.roi_heads.batch_size_per_image=64",
            *(
                f"dataloader.{split}.mapper.augmentations.0.{key}=64"
                for split in ("train", "test")
                for key in ("short_edge_length", "max_size")
            ),
            "train.checkpointer.period=1000",
            f"train.output_dir={out}",
            "lr_multiplier.warmup_length=0.1",
            "optimizer.lr=2e-3",
        ],
    )
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = od.do_train(cfg)
    return cfg, trainer


def test_detectron2_trainer_lowers_the_loss_from_the_lazyconfig(trained):
    cfg, trainer = trained
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 24 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    model = trainer.model
    assert type(trainer).__name__ == "SimpleTrainer"
    assert type(trainer.optimizer).__name__ == "AdamWWithGradClip"  # train.clip_grad
    # the CLIP stays frozen: the bundled tiny CLIP's weights, untouched
    ref = load_clip("ovdense-tiny-vit", "shapes").visual.state_dict()
    for k, v in model.backbone.clip.visual.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert not model.backbone.clip.training
    predictor = model.roi_heads.box_predictor
    assert float(predictor.classifier.temperature.detach()) != 50.0  # learned
    assert cfg.dataloader.train.mapper.augmentations[0].short_edge_length == 64


def test_evaluation_hook_detects_the_test_vocabulary(trained):
    cfg, trainer = trained
    # the EvalHook ran at the last iteration; its results are in the storage
    keys = set(trainer.storage.latest())
    assert {"bbox/AP", "bbox/AP50_novel", "bbox/AP50_base"} <= keys
    assert trainer.model.roi_heads.box_predictor.class_embeds.shape[0] == len(SEEN)  # restored
    from ovdense.integrations.detectron2.train_net import test_vocabulary

    vocab = test_vocabulary(cfg)
    assert vocab["class_embeds"].shape == (30, 128)
    assert vocab["is_base"] == [n in SEEN for n in NAMES[1:]]


# -- evaluator bridge -----------------------------------------------------------------------------
def _random_outputs(dicts, classes, seed=0):
    """Detections near the ground truth (jittered boxes, random scores, some wrong labels)."""
    g = torch.Generator().manual_seed(seed)
    inputs, outputs = [], []
    for d in dicts:
        gt = torch.tensor([a["bbox"] for a in d["annotations"]]).reshape(-1, 4)
        labels = torch.tensor([a["category_id"] for a in d["annotations"]], dtype=torch.long)
        boxes = torch.cat([gt + torch.randn(gt.shape, generator=g) * 4, torch.rand(3, 4) * 60])
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 2)
        labels = torch.cat([labels, torch.randint(len(classes), (3,), generator=g)])
        flip = torch.rand(len(labels), generator=g) < 0.2
        labels[flip] = torch.randint(len(classes), (int(flip.sum()),), generator=g)
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(boxes)
        inst.scores = torch.rand(len(labels), generator=g)
        inst.pred_classes = labels
        inputs.append({"image_id": d["image_id"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def test_evaluator_bridge_equals_pycocotools_and_detectron2(shapes_sets, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    name = "test_shapes_val"
    dicts = DatasetCatalog.get(name)
    classes = MetadataCatalog.get(name).thing_classes
    inputs, outputs = _random_outputs(dicts, classes)
    bridge = od.OVDenseDetectionEvaluator(name, distributed=False)
    bridge.reset()
    bridge.process(inputs, outputs)
    ours = bridge.evaluate()["bbox"]

    # pycocotools directly, on the same detections
    json_file = shapes_sets / "val" / "instances.json"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(json_file))
        by_name = {c["name"]: c["id"] for c in gt.dataset["categories"]}
        dets = [
            {
                "image_id": inp["image_id"],
                "category_id": by_name[classes[int(k)]],
                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                "score": float(s),
            }
            for inp, out in zip(inputs, outputs)
            for b, s, k in zip(
                out["instances"].pred_boxes.tensor,
                out["instances"].scores,
                out["instances"].pred_classes,
            )
        ]
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.params.imgIds = sorted(d["image_id"] for d in dicts)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for stat, value in zip(COCO_STAT_NAMES, ev.stats):
        expected = float("nan") if value < 0 else 100.0 * value
        assert ours[stat] == pytest.approx(expected, nan_ok=True), stat

    # ovdense's evaluator fed directly, and detectron2's own COCOEvaluator
    direct = COCODetectionEvaluator(gt, classes, {"novel": HELD, "base": SEEN})
    direct.process(
        [i["image_id"] for i in inputs],
        [
            {
                "boxes": o["instances"].pred_boxes.tensor,
                "scores": o["instances"].scores,
                "labels": o["instances"].pred_classes,
            }
            for o in outputs
        ],
    )
    ref = direct.evaluate()["bbox"]
    for key in ("AP", "AP50", "AP50_novel", "AP50_base", "AP50_all"):
        assert ours[key] == pytest.approx(ref[key], nan_ok=True), key
    for c, v in ref["per_class_AP50"].items():
        assert ours[f"AP50-{c}"] == pytest.approx(v, nan_ok=True), c
    d2 = COCOEvaluator(name, tasks=("bbox",), distributed=False, use_fast_impl=False)
    d2.reset()
    with contextlib.redirect_stdout(io.StringIO()):
        d2.process(inputs, outputs)
        theirs = d2.evaluate()["bbox"]
    for stat in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert ours[stat] == pytest.approx(theirs[stat], nan_ok=True), stat


# -- datasets --------------------------------------------------------------------------------------
def test_builtin_datasets_metadata():
    assert set(od.BUILTIN_DATASETS) <= set(DatasetCatalog.list())
    val = MetadataCatalog.get("ovdense_shapes_det_val")
    assert val.thing_classes == NAMES[1:] and len(val.thing_classes) == 30
    assert val.base_classes == SEEN and val.novel_classes == HELD and len(HELD) == 6
    assert val.evaluator_type == "ovdense_coco"
    train = MetadataCatalog.get("ovdense_shapes_det_train")
    assert train.thing_classes == SEEN and train.novel_classes == []
    coco_val = MetadataCatalog.get("ovdense_coco_ov_val")
    assert coco_val.thing_classes == coco_ov_classes() and len(coco_val.thing_classes) == 65
    assert coco_val.base_classes == list(COCO_OV_BASE) and len(COCO_OV_BASE) == 48
    assert coco_val.novel_classes == list(COCO_OV_NOVEL) and len(COCO_OV_NOVEL) == 17
    assert MetadataCatalog.get("ovdense_coco_ov_train").thing_classes == list(COCO_OV_BASE)


def test_coco_ov_without_files_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("OVDENSE_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="instances_val2017_all_2.json"):
        DatasetCatalog.get("ovdense_coco_ov_val")


def test_dataset_dicts_index_the_vocabulary(shapes_sets):
    data = json.loads((shapes_sets / "val" / "instances.json").read_text())
    cats = {c["id"]: c["name"] for c in data["categories"]}
    with pytest.warns(UserWarning):
        base_only = DatasetCatalog.get("test_shapes_val_base")
    everything = DatasetCatalog.get("test_shapes_val")
    meta = MetadataCatalog.get("test_shapes_val")
    assert meta.thing_dataset_id_to_contiguous_id == {i: i - 1 for i in range(1, 31)}
    n_all = sum(len(d["annotations"]) for d in everything)
    assert n_all == len(data["annotations"])
    n_base = sum(1 for a in data["annotations"] if cats[a["category_id"]] in SEEN)
    assert sum(len(d["annotations"]) for d in base_only) == n_base
    first = data["annotations"][0]
    ann = next(d for d in everything if d["image_id"] == first["image_id"])["annotations"][0]
    x, y, w, h = first["bbox"]
    assert ann["bbox"] == pytest.approx([x, y, x + w, y + h])
    assert meta.thing_classes[ann["category_id"]] == cats[first["category_id"]]


# -- segmentation head -----------------------------------------------------------------------------
def test_sem_seg_head_in_detectron2s_semantic_segmentor(tiny_clip_factory):
    clip = tiny_clip_factory(seed=2)
    bb = od.OVDenseCLIPBackbone(clip, strategy="naclip", scales=())
    embeds = F.normalize(torch.randn(5, 32), dim=1)
    head = od.OVDenseSemSegHead(bb.output_shape(), class_embeds=embeds, logit_scale=10.0)
    model = SemanticSegmentor(backbone=bb, sem_seg_head=head, **od.clip_pixel_stats(bb)).eval()
    image = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8)
    with torch.no_grad():
        (out,) = model([{"image": image}])
    # independent: ovdense's dense CLIP on the normalised image, cosine x 10, upsampled
    mean = torch.tensor(bb.mean).view(3, 1, 1)
    std = torch.tensor(bb.std).view(3, 1, 1)
    x = ((image.float() / 255 - mean) / std)[None]
    dense = dense_backbone_for(clip.visual, "naclip")(x).dense
    ref = F.interpolate(
        10.0 * torch.einsum("bdhw,kd->bkhw", dense, embeds), size=(40, 48), mode="bilinear"
    )[0]
    torch.testing.assert_close(out["sem_seg"], ref, atol=1e-4, rtol=1e-4)
    model.train()
    label = torch.randint(0, 5, (40, 48))
    label[:4] = 255
    losses = model([{"image": image, "sem_seg": label}])
    expected = F.cross_entropy(ref[None], label[None], ignore_index=255)
    torch.testing.assert_close(losses["loss_sem_seg"], expected, atol=1e-4, rtol=1e-4)


# -- the yacs / registry route ---------------------------------------------------------------------
def test_registries_build_the_detector_from_a_yacs_config(tiny_clip_config):
    cfg = od.add_ovdense_config(get_cfg())
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_ovdense_clip_backbone"
    cfg.MODEL.OVDENSE.CLIP.CONFIG = json.dumps(tiny_clip_config)
    cfg.MODEL.OVDENSE.CLIP.SEED = 3
    cfg.MODEL.OVDENSE.SCALES = [1.0, 0.5]
    cfg.MODEL.OVDENSE.PYRAMID_CHANNELS = 32
    cfg.MODEL.OVDENSE.TEMPLATES = "single"
    cfg.MODEL.OVDENSE.TRAIN_CLASSES = ["red circle", "blue square", "green triangle"]
    cfg.MODEL.RPN.IN_FEATURES = ["p3", "p4", "p5"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128]]
    cfg.MODEL.ROI_HEADS.NAME = "OVDenseROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p3", "p4"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.PIXEL_MEAN = [122.77, 116.75, 104.09]
    cfg.MODEL.PIXEL_STD = [68.50, 66.63, 70.32]
    cfg.INPUT.FORMAT = "RGB"
    model = build_model(cfg)
    assert isinstance(model.backbone, od.OVDenseCLIPBackbone)
    assert isinstance(model.roi_heads, od.OVDenseROIHeads)
    assert model.roi_heads.clip_stride == 8
    pred = model.roi_heads.box_predictor
    assert isinstance(pred, od.TextFastRCNNOutputLayers)
    clip = load_clip(config=tiny_clip_config, seed=3)
    expected = od.encode_vocabulary(clip, cfg.MODEL.OVDENSE.TRAIN_CLASSES, "single")
    torch.testing.assert_close(pred.train_class_embeds, expected)
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    inst = Instances((64, 64))
    inst.gt_boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0]]))
    inst.gt_classes = torch.tensor([1])
    model.train()
    with EventStorage():
        losses = model([{"image": image, "instances": inst}])
    assert {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 64, "width": 64}])
    assert out["instances"].image_size == (64, 64)

    seg = od.add_ovdense_config(get_cfg())
    seg.MODEL.DEVICE = "cpu"
    seg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    seg.MODEL.BACKBONE.NAME = "build_ovdense_clip_backbone"
    seg.MODEL.OVDENSE.CLIP.CONFIG = json.dumps(tiny_clip_config)
    seg.MODEL.OVDENSE.SCALES = []
    seg.MODEL.OVDENSE.TEMPLATES = "single"
    seg.MODEL.OVDENSE.TRAIN_CLASSES = ["sky", "tree"]
    seg.MODEL.SEM_SEG_HEAD.NAME = "OVDenseSemSegHead"
    seg_model = build_model(seg).eval()
    assert isinstance(seg_model.sem_seg_head, od.OVDenseSemSegHead)
    with torch.no_grad():
        (res,) = seg_model([{"image": image}])
    assert res["sem_seg"].shape == (2, 64, 64)


# -- the shipped configs ---------------------------------------------------------------------------
def test_ovcoco_config_has_ovdenses_fvit_settings_and_builds(tiny_clip_factory):
    cfg = od.load_config("fvit_vitb16_ovcoco")
    ours = OVLazyConfig.load(str(ROOT / "configs" / "train" / "fvit_vitb16_ovcoco.py"))
    m, ref = cfg.model, ours.model
    for key in ("model_name", "checkpoint"):
        assert m.backbone.clip[key] == ref.clip[key], key
    assert m.backbone.strategy == ref.strategy and tuple(m.backbone.out_indices) == ref.out_indices
    assert m.backbone.out_channels == ref.pyramid_channels
    p = m.roi_heads.box_predictor
    assert p.class_embeds.names == list(COCO_OV_BASE) == list(ref.train_classes)
    assert p.class_embeds.templates == ref.templates
    for ours_key, ref_key in (
        ("temperature", "temperature"),
        ("learn_background", "learn_background"),
        ("background_weight", "background_weight"),
        ("clip_temperature", "clip_temperature"),
        ("alpha", "alpha"),
        ("beta", "beta"),
        ("reg_fc_dim", "box_fc_dim"),
    ):
        assert p[ours_key] == ref[ref_key], ours_key
    assert (p.test_score_thresh, p.test_nms_thresh, p.test_topk_per_image) == (0.01, 0.4, 100)
    assert m.roi_heads.box_head.conv_dims == [256] * ref.box_convs
    assert (
        m.roi_heads.batch_size_per_image == 512 and m.proposal_generator.batch_size_per_image == 256
    )
    assert cfg.optimizer.lr == ours.optimizer.lr and cfg.optimizer.weight_decay == 0.1
    assert cfg.train.clip_grad == ours.train.clip_grad and cfg.train.max_iter == 5051
    assert cfg.dataloader.train.total_batch_size == 64
    assert cfg.test_vocabulary.class_embeds.names == coco_ov_classes()
    # the structure builds (levels p2..p6, pooler scales, anchors) on a tiny 12-block patch-16 CLIP
    tiny = L(load_clip)(
        config={
            "embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 12, "width": 32, "head_width": 16,
                           "patch_size": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                         "layers": 1},
        },
        seed=0,
    )  # fmt: skip
    cfg.model.backbone.clip = tiny
    cfg.model.backbone.out_channels = 32
    cfg.model.proposal_generator.head.in_channels = 32
    cfg.model.roi_heads.box_head.input_shape = ShapeSpec(channels=32, height=7, width=7)
    cfg.model.roi_heads.box_head.conv_dims = [16]
    cfg.model.roi_heads.box_head.fc_dims = [32, 32]
    cfg.model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=32)
    cfg.model.roi_heads.box_predictor.reg_fc_dim = 32
    for emb in (p.class_embeds, p.background_embed):
        emb.clip, emb.templates = tiny, "single"
    model = instantiate(cfg.model)
    assert list(model.backbone.output_shape()) == ["p2", "p3", "p4", "p5", "p6", "clip_dense"]
    assert model.backbone.out_indices == (3, 5, 7, 11)
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    inst = Instances((64, 64))
    inst.gt_boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0]]))
    inst.gt_classes = torch.tensor([5])
    with EventStorage():
        losses = model([{"image": image, "instances": inst}])
    assert all(torch.isfinite(v) for v in losses.values())


def test_lazy_parts_name_levels_by_stride_and_add_conv_norm_only_when_given():
    from ovdense.integrations.detectron2.lazy_parts import fvit_roi_heads, fvit_rpn, level_name

    assert [level_name(s) for s in (4, 8, 16, 32, 64)] == ["p2", "p3", "p4", "p5", "p6"]
    with pytest.raises(ValueError, match="power of two"):
        level_name(12)
    rpn = fvit_rpn(
        strides=[8, 16], channels=32, batch_size_per_image=64, pre_nms_topk=(9, 8),
        post_nms_topk=(7, 6),
    )  # fmt: skip
    assert list(rpn.in_features) == ["p3", "p4"] and list(rpn.anchor_generator.strides) == [8, 16]
    assert [list(s) for s in rpn.anchor_generator.sizes] == [[64], [128]]
    kw = dict(clip=L(load_clip)(model_name="x"), train_classes=["a", "b", "c"], templates="single",
              strides=[4, 16], channels=32, conv_dims=[], fc_dims=[48, 24],
              batch_size_per_image=16, learn_background=True, clip_stride=8)  # fmt: skip
    heads = fvit_roi_heads(**kw)
    assert heads.num_classes == 3 and list(heads.box_in_features) == ["p2", "p4"]
    assert list(heads.box_pooler.scales) == [0.25, 0.0625]
    assert heads.box_predictor.input_shape.channels == heads.box_predictor.reg_fc_dim == 24
    assert "conv_norm" not in heads.box_head
    assert fvit_roi_heads(**kw, conv_norm="GN").box_head.conv_norm == "GN"


def test_config_names_and_the_tool_wrapper():
    assert od.config_path("fvit_shapes") == od.CONFIGS_DIR / "fvit_shapes.py"
    with pytest.raises(FileNotFoundError, match="fvit_vitb16_ovcoco"):
        od.config_path("no_such_config")
    spec = importlib.util.spec_from_file_location("d2_train_wrapper", ROOT / "tools/d2_train.py")
    wrapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrapper)
    from ovdense.integrations.detectron2 import train_net

    assert wrapper.main is train_net.main


def test_grad_clipping_wrapper():
    from ovdense.integrations.detectron2.train_net import with_grad_clipping

    w = torch.nn.Parameter(torch.zeros(3))
    opt = with_grad_clipping(torch.optim.SGD([w], lr=1.0), max_norm=0.5)
    (w * torch.tensor([30.0, 40.0, 0.0])).sum().backward()
    opt.step()
    torch.testing.assert_close(w.detach(), -torch.tensor([0.3, 0.4, 0.0]))
    assert isinstance(opt, torch.optim.SGD)
