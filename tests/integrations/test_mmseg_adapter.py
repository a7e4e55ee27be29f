"""ovdense inside mmsegmentation: ``OVDenseSegmentor`` built from an mmseg config through mmseg's
registry, mmseg's test loop on a small synthetic dataset, and mmseg's ``IoUMetric`` against
ovdense's ``SemSegEvaluator`` on the same predictions. Skipped where mmseg is not installed
(CI installs it from the mmcv wheel when the wheel is there: .ci/run)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("mmseg")

from mmengine.config import Config  # noqa: E402
from mmseg.registry import DATASETS, MODELS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

import ovdense.integrations.mmseg as om  # noqa: E402
from ovdense.evaluation import SemSegEvaluator  # noqa: E402
from ovdense.integrations.mmseg.runner import BENCHMARKS, CONFIGS_DIR, METHODS  # noqa: E402
from ovdense.integrations.mmseg.segmentor import read_class_file  # noqa: E402

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY = ["model.templates='single'", "model.short_side=40", "model.window=32", "model.stride=16"]
CLASSES = ("background", "red circle", "blue square", "green triangle")


def _model_cfg(**kw) -> dict:
    cfg = dict(
        type="OVDenseSegmentor",
        preset="naclip",
        clip=dict(config=TINY_CLIP, seed=0),
        overrides=[*TINY, "model.pamr=None"],
    )
    cfg.update(kw)
    return cfg


def _write_dataset(root: Path, n: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` random RGB images (two sizes) with label maps 0..3 and some 255."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    (root / "ann").mkdir()
    out = []
    for i in range(n):
        h, w = (44, 60) if i % 2 else (52, 41)
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        lab = rng.integers(0, 4, (h, w)).astype(np.uint8)
        lab[:3] = 255
        Image.fromarray(img).save(root / "img" / f"s{i}.png")
        Image.fromarray(lab).save(root / "ann" / f"s{i}.png")
        out.append((img, lab))
    return out


def _runner_cfg(root: Path, work: Path, model: dict) -> Config:
    base = Config.fromfile(str(CONFIGS_DIR / "_base_" / "default_runtime.py"))
    cfg = Config(
        dict(
            **base.to_dict(),
            model=model,
            work_dir=str(work),
            test_dataloader=dict(
                batch_size=1,
                num_workers=0,
                sampler=dict(type="DefaultSampler", shuffle=False),
                dataset=dict(
                    type="BaseSegDataset",
                    metainfo=dict(classes=CLASSES),
                    data_root=str(root),
                    data_prefix=dict(img_path="img", seg_map_path="ann"),
                    img_suffix=".png",
                    seg_map_suffix=".png",
                    pipeline=[
                        dict(type="LoadImageFromFile"),
                        dict(type="LoadAnnotations"),
                        dict(type="PackSegInputs"),
                    ],
                ),
            ),
        )
    )
    return cfg


@pytest.fixture(scope="module")
def tiny_model():
    return MODELS.build(_model_cfg(classnames=list(CLASSES)))


def test_mmseg_test_loop_iou_metric_equals_ovdense(tmp_path):
    """An mmseg config with an ovdense preset and a tiny random CLIP builds through mmseg's
    registry and runs mmseg's test loop (vocabulary from the dataset's metainfo by the hook);
    IoUMetric equals ovdense's evaluator in the same run, and equals ovdense's own inference
    scored by SemSegEvaluator."""
    from mmengine.runner import Runner

    data = _write_dataset(tmp_path / "data")
    cfg = _runner_cfg(tmp_path / "data", tmp_path / "work", _model_cfg())
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    for mm, ov in (("mIoU", "ovdense/mIoU"), ("mAcc", "ovdense/mAcc"), ("aAcc", "ovdense/pAcc")):
        assert abs(metrics[mm] - metrics[ov]) <= 0.005 + 1e-9, (mm, metrics)

    model = runner.model
    assert isinstance(model, om.OVDenseSegmentor)
    assert model.vocabulary is not None and model.vocabulary.num_classes == 4
    seg = model.seg
    text = seg.encode_text(list(CLASSES))
    evaluator = SemSegEvaluator(4, 255, list(CLASSES))
    for img, lab in data:
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
        evaluator.process(seg.decode(seg.encode_image(x), text).labels[0], lab)
    direct = evaluator.evaluate()["sem_seg"]
    assert abs(metrics["mIoU"] - direct["mIoU"]) <= 0.005 + 1e-9
    assert metrics["ovdense/mIoU"] == pytest.approx(direct["mIoU"], abs=1e-9)


def test_predict_equals_ovdense_inference(tiny_model):
    """``predict`` gives ovdense's labels and class probabilities, on the BGR->RGB input."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (45, 58, 3), dtype=np.uint8)
    bgr = torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1)
    meta = dict(ori_shape=(45, 58), img_shape=(45, 58))
    data = tiny_model.data_preprocessor(
        dict(inputs=[bgr], data_samples=[SegDataSample(metainfo=meta)]), False
    )
    out = tiny_model.predict(data["inputs"], data["data_samples"])[0]
    seg = tiny_model.seg
    ref = seg.decode(
        seg.encode_image(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0),
        seg.encode_text(list(CLASSES)),
    )
    assert torch.equal(out.pred_sem_seg.data, ref.labels[0:1])
    assert torch.allclose(out.seg_logits.data, ref.probs[0], atol=1e-6)
    assert out.seg_logits.data.shape == (4, 45, 58)


def test_text_needing_strategy_gets_the_vocabulary():
    """A strategy whose image features need the vocabulary (ResCLIP's semantic feedback) runs
    through ``predict`` and the tensor mode, with ovdense's own results; without the text the
    features differ (the test can fail)."""
    model = MODELS.build(
        _model_cfg(
            preset="resclip",
            classnames=list(CLASSES),
            overrides=[
                *TINY,
                "model.strategy_kwargs.rcs_layers=(1,)",
                "model.strategy_kwargs.temp_thd=0.0",
            ],  # fmt: skip
        )
    ).eval()
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (45, 58, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    out = model.predict(x, [SegDataSample(metainfo=dict(ori_shape=(45, 58), img_shape=(45, 58)))])
    seg = model.seg
    text = seg.encode_text(list(CLASSES))
    ref = seg.decode(seg.encode_image(x / 255.0, text=text), text)
    assert torch.equal(out[0].pred_sem_seg.data, ref.labels[0:1])
    assert torch.allclose(out[0].seg_logits.data, ref.probs[0], atol=1e-6)
    assert torch.allclose(model._forward(x), ref.probs, atol=1e-6)
    # the feedback matters here: other names give other features
    other = seg.encode_text(["sky", "grass", "road", "car"])
    assert not torch.allclose(
        model.extract_feat(x), seg.encode_image(x / 255.0, text=other).dense, atol=1e-4
    )
    assert torch.allclose(model.extract_feat(x), seg.encode_image(x / 255.0, text=text).dense)


def test_mmseg_resized_input_comes_back_at_ori_shape(tiny_model):
    """An image resized by the pipeline (img_shape != ori_shape): maps at ori_shape, the merged
    window maps resized there (the official repositories' order)."""
    x = torch.randint(0, 256, (1, 3, 40, 52)).float()
    meta = dict(ori_shape=(63, 81), img_shape=(40, 52))
    out = tiny_model.predict(x, [SegDataSample(metainfo=meta)])[0]
    assert out.pred_sem_seg.data.shape == (1, 63, 81)
    probs = out.seg_logits.data
    assert probs.shape == (4, 63, 81)
    assert torch.equal(out.pred_sem_seg.data[0], probs.argmax(0))
    seg = tiny_model.seg
    feats = seg.encode_image(x / 255.0)
    logits = seg.window_logits(feats, seg.encode_text(list(CLASSES)))
    up = torch.nn.functional.interpolate(logits, size=(63, 81), mode="bilinear")
    assert torch.allclose(probs, torch.softmax(up[0] * seg.logit_scale, 0), atol=1e-6)


TINY_DINO = "model.strategy_kwargs.vfm_kwargs"
TINY_CORRCLIP = [
    *TINY,
    f"+{TINY_DINO}.pretrained=False",
    f"+{TINY_DINO}.img_size=32",
    f"+{TINY_DINO}.embed_dim=24",
    f"+{TINY_DINO}.depth=2",
    f"+{TINY_DINO}.num_heads=2",
    "model.precision='fp32'",
]


def _tiny_corrclip(**kw):
    """CorrCLIP's preset through mmseg's registry, with the tiny CLIP and a tiny random DINO."""
    cfg = _model_cfg(preset="corrclip", classnames=list(CLASSES), overrides=TINY_CORRCLIP)
    cfg.update(kw)
    return MODELS.build(cfg).eval()


def _region_map(h: int, w: int) -> np.ndarray:
    """Four boxes numbered 3, 5, 7, 9 over a background 0 (no mask)."""
    r = np.zeros((h, w), np.int64)
    r[: h // 2, : w // 2] = 3
    r[: h // 2, w // 2 :] = 5
    r[h // 2 :, : w // 3] = 7
    r[h // 2 + 4 :, w // 2 :] = 9
    return r


def test_region_maps_from_files_reach_the_strategy_and_the_vote(tmp_path):
    """CorrCLIP with region maps generated beforehand (``region_dir``, CorrCLIP's layout), on an
    image the pipeline resized: the strategy gets the map resized (nearest) to the input, the
    vote the map at ori_shape, so every region of the file has one label in the output."""
    regions = _region_map(63, 81)
    np.savez(tmp_path / "s0.npz", instance_mask=regions)
    model = _tiny_corrclip(region_dir=str(tmp_path))
    assert model.seg.mask_source is None  # the preset's SAM 2 source is not built
    torch.manual_seed(0)
    x = torch.randint(0, 256, (1, 3, 40, 52)).float()
    meta = dict(ori_shape=(63, 81), img_shape=(40, 52), img_path=str(tmp_path / "s0.png"))
    labels = model.predict(x, [SegDataSample(metainfo=meta)])[0].pred_sem_seg.data[0]
    assert labels.shape == (63, 81)
    for v in (3, 5, 7, 9):
        assert labels[torch.from_numpy(regions == v)].unique().numel() == 1
    # the strategy saw the map resized (nearest) to the input: the tensor mode equals ovdense
    # given that map directly, and differs without regions (the test can fail)
    seg = model.seg
    text = seg.encode_text(list(CLASSES))
    idx_h = (torch.arange(40) * 63 / 40).floor().long()
    idx_w = (torch.arange(52) * 81 / 52).floor().long()
    small = torch.from_numpy(regions)[idx_h][:, idx_w][None]
    given = seg.decode(seg.encode_image(x / 255.0, text, regions=small), text, return_probs=True)
    probs = model._forward(x, [SegDataSample(metainfo=meta)])
    assert torch.allclose(probs, given.probs, atol=1e-6)
    flat = seg.encode_image(x / 255.0, text, regions=torch.zeros_like(small)).dense
    assert not torch.allclose(seg.encode_image(x / 255.0, text, regions=small).dense, flat)
    with pytest.raises(ValueError, match="found by each sample's img_path"):
        model.extract_feat(x)


def test_region_map_files_are_checked(tmp_path):
    np.savez(tmp_path / "s0.npz", instance_mask=_region_map(30, 30), other=np.zeros(3))
    model = _tiny_corrclip(region_dir=str(tmp_path))
    x = torch.randint(0, 256, (1, 3, 40, 52)).float()
    meta = dict(ori_shape=(63, 81), img_shape=(40, 52), img_path=str(tmp_path / "s1.jpg"))
    with pytest.raises(FileNotFoundError, match="No region map for s1.jpg"):
        model.predict(x, [SegDataSample(metainfo=meta)])
    meta["img_path"] = str(tmp_path / "s0.jpg")
    with pytest.raises(ValueError, match="expected an integer 63x81 map"):
        model.predict(x, [SegDataSample(metainfo=meta)])
    model.region_key = "missing"
    with pytest.raises(KeyError, match="has no array .missing."):
        model.predict(x, [SegDataSample(metainfo=meta)])
    with pytest.raises(FileNotFoundError, match="region_dir is not a folder"):
        MODELS.build(_model_cfg(preset="corrclip", region_dir=str(tmp_path / "nope")))


def test_mask_source_regions_follow_the_maps_to_ori_shape(tmp_path):
    """With the preset's own mask source and an image the pipeline resized, the vote works at
    ori_shape on the source's map resized there (it used to get the map at the input size)."""
    from ovdense.sam.mask_source import MaskSource

    class TwoStrips(MaskSource):
        def generate(self, image):
            h, w = image.shape[:2]
            m = np.zeros((2, h, w), bool)  # the middle columns without a mask
            m[0, :, : w // 4] = True
            m[1, :, w // 2 :] = True
            return m

        def settings(self):
            return {"source": "strips"}

    model = _tiny_corrclip(overrides=[*TINY_CORRCLIP, "model.mask_source=None"])
    model.seg.mask_source = TwoStrips()
    x = torch.randint(0, 256, (1, 3, 40, 52)).float()
    meta = dict(ori_shape=(63, 81), img_shape=(40, 52))
    labels = model.predict(x, [SegDataSample(metainfo=meta)])[0].pred_sem_seg.data[0]
    assert labels.shape == (63, 81)
    # the source's masks at 52 columns (< 13, >= 26), nearest-resized to 81: output column c
    # reads input column floor(c * 52 / 81)
    col = (torch.arange(81) * 52 / 81).floor()
    left, right = col < 13, col >= 26
    assert labels[:, left].unique().numel() == 1 and labels[:, right].unique().numel() == 1


def test_benchmark_settings_and_class_rule():
    """``benchmark=`` applies the paper protocol's per-benchmark settings and class-name rule."""
    m = MODELS.build(_model_cfg(preset="sclip", benchmark="voc21", overrides=TINY))
    assert m.seg.logit_scale == 65.0 and m.seg.prob_thd == 0.1 and m.seg.area_thd == 0.1
    assert m.seg.background_index == 0
    assert m.vocabulary is not None and m.vocabulary.num_classes == 21
    assert len(m.vocabulary.classes[0]) == 26  # SCLIP's rule: VOC's background words
    c = MODELS.build(_model_cfg(preset="clearclip", benchmark="voc21", overrides=TINY))
    assert c.vocabulary is not None and c.vocabulary.classes[0] == ("background",)
    assert c.seg.prob_thd == 0.5


def test_class_name_file_rules(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("sky; wall, tree\ncat\nbuilding, edifice\n")
    assert read_class_file(path, "sclip").classes == (
        ("sky", "wall", "tree"),
        ("cat",),
        ("building", "edifice"),
    )
    assert read_class_file(path, "proxyclip").classes[2] == ("building, edifice",)
    assert read_class_file(path, "clearclip").classes[0] == ("background",)
    m = MODELS.build(_model_cfg(classnames=str(path), class_rule="proxyclip"))
    assert m.vocabulary is not None and m.vocabulary.num_classes == 3


def test_no_vocabulary_is_one_clear_error():
    m = MODELS.build(_model_cfg())
    with pytest.raises(RuntimeError, match="OVDenseVocabularyHook"):
        m.predict(torch.zeros(1, 3, 40, 40))


def test_normalising_preprocessor_is_refused():
    with pytest.raises(ValueError, match="0..255"):
        MODELS.build(
            _model_cfg(
                data_preprocessor=dict(type="SegDataPreProcessor", mean=[0, 0, 0], std=[1, 1, 1])
            )
        )


def test_evaluate_both_agree_with_absent_classes_and_ignore():
    rng = np.random.default_rng(2)
    preds, gts = [], []
    for _ in range(4):
        gt = rng.integers(0, 5, (30, 40))
        gt[gt == 4] = 255  # class 4: never in the ground truth
        gt[:5] = 255
        pred = rng.integers(0, 5, (30, 40))
        pred[pred == 3] = 2  # class 3: never predicted
        preds.append(pred)
        gts.append(gt)
    preds.append(np.full((10, 10), 5))  # class 5 only predicted, never in the ground truth
    gts.append(np.full((10, 10), 0))
    r = om.evaluate_both(preds, gts, num_classes=7)
    mm, ov = r["mmseg"], r["ovdense"]
    assert abs(mm["mIoU"] - ov["mIoU"]) <= 0.005 + 1e-9
    assert abs(mm["mAcc"] - ov["mAcc"]) <= 0.005 + 1e-9
    assert abs(mm["aAcc"] - ov["pAcc"]) <= 0.005 + 1e-9
    assert not math.isnan(ov["mIoU"])


@pytest.mark.parametrize("method", METHODS)
def test_shipped_configs(method):
    """One config per benchmark for every training-free method; each names a registered
    dataset type and the benchmark its file name says."""
    for bench in BENCHMARKS:
        cfg = Config.fromfile(str(om.config_path(method, bench)))
        assert cfg.model.type == "OVDenseSegmentor"
        assert (cfg.model.preset, cfg.model.benchmark) == (method, bench)
        assert DATASETS.get(cfg.test_dataloader.dataset.type) is not None
        assert "ovdense.integrations.mmseg" in cfg.custom_imports.imports
    files = sorted(p.stem for p in (CONFIGS_DIR / method).glob("*.py"))
    assert files == sorted(f"{method}_{b}" for b in BENCHMARKS)


def test_voc20_and_coco_object_datasets():
    voc20 = DATASETS.get("OVDensePascalVOC20Dataset")
    obj = DATASETS.get("OVDenseCOCOObjectDataset")
    assert len(voc20.METAINFO["classes"]) == 20 and voc20.METAINFO["classes"][0] == "aeroplane"
    assert len(obj.METAINFO["classes"]) == 81 and obj.METAINFO["classes"][0] == "background"


def test_backbone_gives_mmseg_feature_maps():
    bb = MODELS.build(
        dict(type="OVDenseBackbone", config=TINY_CLIP, strategy="naclip", out_indices=(1,))
    )
    feats = bb(torch.randn(2, 3, 32, 48))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 4, 6), (2, 32, 4, 6)]
    assert not any(p.requires_grad for p in bb.parameters())


def test_mmseg_test_script_wraps_the_runner():
    import importlib.util

    import ovdense.integrations.mmseg.runner as runner

    path = Path(__file__).resolve().parents[2] / "tools" / "mmseg_test.py"
    spec = importlib.util.spec_from_file_location("wrapper_mmseg_test", path)
    assert spec is not None and spec.loader is not None
    wrapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrapper)  # importing must not run the tool
    assert wrapper.main is runner.main
    with pytest.raises(SystemExit) as err:
        runner.main(["--help"])
    assert err.value.code == 0


def test_shipped_config_runs_on_the_ovdense_layout(tmp_path):
    """``run_test("naclip_voc21", data_root=...)``: the shipped config, its dataset under
    ``dataset_subdir`` of the data root, the paper protocol's VOC21 settings and class names,
    both metrics in the result."""
    from ovdense.integrations.mmseg import run_test

    voc = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(3)
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "SegmentationClass").mkdir()
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(
            voc / "JPEGImages" / f"{name}.jpg"
        )
        Image.fromarray(rng.integers(0, 21, (40, 52)).astype(np.uint8)).save(
            voc / "SegmentationClass" / f"{name}.png"
        )
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("a\nb\n")
    metrics = run_test(
        "naclip_voc21",
        work_dir=tmp_path / "work",
        data_root=tmp_path / "data",
        cfg_options={
            "model.clip": dict(config=TINY_CLIP, seed=0),
            "model.overrides": [*TINY, "model.pamr=None"],
            "test_dataloader.num_workers": 0,
        },
    )
    assert {"mIoU", "aAcc", "ovdense/mIoU", "ovdense/pAcc"} <= set(metrics)
    assert abs(metrics["mIoU"] - metrics["ovdense/mIoU"]) <= 0.005 + 1e-9
