"""Region classification on COCO panoptic: loader, accuracy accumulator, evaluator, CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ovdense.evaluation.regions import (
    RegionAccuracy,
    clean_category_name,
    evaluate_regions,
    load_coco_panoptic,
)
from ovdense.model_zoo import build_segmentor
from ovdense.modeling.heads.region import RegionClassifier
from ovdense.modeling.segmentors.training_free import rescale_size
from ovdense.modeling.strategies.base import TEXT_EMBEDS
from ovdense.modeling.text.encoder import ClassEmbeddings

ROOT = Path(__file__).resolve().parents[2]
H, W = 40, 56
CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "supercategory": "person"},
    {"id": 18, "name": "dog", "isthing": 1, "supercategory": "animal"},
    {"id": 187, "name": "wall-other-merged", "isthing": 0, "supercategory": "wall"},
]
# per image: (segment id, category id, (y1, y2, x1, x2) rectangle); painted in order, the first
# one being the background; pixel (0, 0) stays void (id 0)
LAYOUTS = [
    [(3 + 256 * 7 + 65536 * 2, 187, (0, H, 0, W)), (11, 1, (8, 24, 8, 24)),
     (300, 18, (20, 36, 30, 50))],
    [(65536 * 5 + 1, 187, (0, H, 0, W)), (2 + 256 * 1, 1, (4, 38, 40, 55)),
     (9, 1, (10, 18, 2, 12)), (77, 18, (25, 40, 0, 30))],
]  # fmt: skip


def _write_panoptic(root: Path) -> tuple[Path, Path, Path, list[np.ndarray]]:
    png_dir, img_dir = root / "panoptic_val", root / "val"
    png_dir.mkdir(parents=True)
    img_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, annotations, id_maps = [], [], []
    for i, layout in enumerate(LAYOUTS):
        ids = np.zeros((H, W), np.int64)
        for seg_id, _, (y1, y2, x1, x2) in layout:
            ids[y1:y2, x1:x2] = seg_id
        ids[0, 0] = 0
        id_maps.append(ids)
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(png_dir / f"{i:012d}.png")
        pixels = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(img_dir / f"{i:012d}.png")
        segments = []
        for seg_id, cat, _ in layout:
            ys, xs = np.nonzero(ids == seg_id)
            x, y = int(xs.min()), int(ys.min())
            bbox = [x, y, int(xs.max()) + 1 - x, int(ys.max()) + 1 - y]
            segments.append(
                {"id": seg_id, "category_id": cat, "iscrowd": 0, "bbox": bbox, "area": len(xs)}
            )
        images.append({"id": 100 + i, "file_name": f"{i:012d}.png", "height": H, "width": W})
        annotations.append(
            {"image_id": 100 + i, "file_name": f"{i:012d}.png", "segments_info": segments}
        )
    json_path = root / "panoptic_val.json"
    json_path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES})
    )
    return json_path, png_dir, img_dir, id_maps


@pytest.fixture()
def panoptic(tmp_path):
    return _write_panoptic(tmp_path / "coco")


def test_clean_category_name():
    assert clean_category_name("wall-other-merged") == "wall"
    assert clean_category_name("door-stuff") == "door"
    assert clean_category_name("window-blind") == "window blind"
    assert clean_category_name("tree-merged") == "tree"
    assert clean_category_name("hair drier") == "hair drier"


def test_loader_decodes_masks_and_boxes(panoptic):
    json_path, png_dir, img_dir, id_maps = panoptic
    data = load_coco_panoptic(json_path, png_dir, img_dir)
    assert len(data) == 2
    assert [c.name for c in data.categories] == ["person", "dog", "wall-other-merged"]
    assert data.class_names == ["person", "dog", "wall"]
    assert data.isthing == [True, True, False]
    items = list(data)
    for item, layout, ids in zip(items, LAYOUTS, id_maps, strict=True):
        assert item.image_path.is_file() and (item.height, item.width) == (H, W)
        assert [s.id for s in item.segments] == [seg_id for seg_id, _, _ in layout]
        for seg, (seg_id, cat, (y1, y2, x1, x2)) in zip(item.segments, layout, strict=True):
            assert seg.category_id == cat
            assert seg.category_index == [c["id"] for c in CATEGORIES].index(cat)
            assert seg.isthing == (cat != 187)
            assert seg.mask.dtype == bool and seg.mask.shape == (H, W)
            np.testing.assert_array_equal(seg.mask, ids == seg_id)
            if cat != 187:  # painted rectangles: exact masks and XYXY boxes
                expected = np.zeros((H, W), bool)
                expected[y1:y2, x1:x2] = True
                np.testing.assert_array_equal(seg.mask, expected)
                assert seg.bbox == (x1, y1, x2, y2)
    assert not items[0].segments[0].mask[0, 0]  # void pixel
    assert items[0].segments[0].bbox == (0, 0, W, H)
    assert len(load_coco_panoptic(json_path, png_dir, img_dir, limit=1)) == 1


def test_loader_errors(panoptic, tmp_path):
    json_path, png_dir, img_dir, _ = panoptic
    with pytest.raises(FileNotFoundError, match="Panoptic JSON"):
        load_coco_panoptic(tmp_path / "nope.json", png_dir, img_dir)
    with pytest.raises(FileNotFoundError, match="image folder"):
        load_coco_panoptic(json_path, png_dir, tmp_path / "nope")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annotations"):
        load_coco_panoptic(bad, png_dir, img_dir)


def test_region_accuracy_hand_computed():
    acc = RegionAccuracy([True, True, False, True], ["a", "b", "c", "d"])
    acc.update([0, 0, 1], [0, 1, 1])
    acc.update(torch.tensor([2, 2, 0, -1]), torch.tensor([2, 2, 2, 1]))
    # class a: 1/1, b: 1/3, c: 2/3, d: no regions
    res = acc.compute()
    assert res["things"]["num_regions"] == 4 and res["stuff"]["num_regions"] == 3
    assert res["things"]["top1"] == pytest.approx(100 * 2 / 4)
    assert res["things"]["mean_acc"] == pytest.approx((100 + 100 / 3) / 2)
    assert res["things"]["num_classes"] == 2
    assert res["stuff"]["top1"] == pytest.approx(100 * 2 / 3)
    assert res["stuff"]["mean_acc"] == pytest.approx(100 * 2 / 3)
    assert res["all"]["top1"] == pytest.approx(100 * 4 / 7)
    assert res["all"]["mean_acc"] == pytest.approx((100 + 100 / 3 + 200 / 3) / 3)
    assert res["per_class"]["b"] == pytest.approx(100 / 3)
    assert np.isnan(res["per_class"]["d"])
    empty = RegionAccuracy([True, False]).compute()
    assert np.isnan(empty["all"]["top1"]) and np.isnan(empty["stuff"]["mean_acc"])
    with pytest.raises(ValueError):
        acc.update([0], [0, 1])
    with pytest.raises(ValueError):
        acc.update([0], [4])


def _features(seg, path, text=None):
    """The backbone's features of an image resized as the segmentor does; with ``text``, the
    names' embeddings go to a strategy that reads them (ResCLIP)."""
    img = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)[None]
    hr, wr = rescale_size(H, W, seg.short_side, seg.max_long_side)
    img = F.interpolate(img.float() / 255, size=(hr, wr), mode="bilinear")
    x = seg.backbone.normalize(img)
    with torch.no_grad():
        if text is not None:
            return seg.backbone(x, {TEXT_EMBEDS: text.embeds}), hr, wr
        return seg.backbone(x), hr, wr


def _use_region_prototypes(seg, data):
    """Make the (random) model informative: each class's text embedding becomes the box feature
    of its first segment in image 0 (wall, person, dog), so predictions vary between regions."""
    real = seg.encode_text(data.class_names)
    item = next(iter(data))
    feats, hr, wr = _features(seg, item.image_path)
    boxes = torch.tensor([s.bbox for s in item.segments]).float()
    boxes[:, 0::2] *= wr / W
    boxes[:, 1::2] *= hr / H
    with torch.no_grad():
        protos = RegionClassifier().region_features(feats, boxes=[boxes])
    order = [s.category_index for s in item.segments]
    embeds = torch.zeros_like(protos)
    embeds[order] = protos
    fake = ClassEmbeddings(embeds, real.name_to_class, real.vocabulary)
    seg.encode_text = lambda vocab: fake


def _recompute(seg, data, mode):
    """Per-region predictions and accuracy recomputed directly from RegionClassifier outputs."""
    text = seg.encode_text(data.class_names)
    clf = RegionClassifier(empty="zero")
    meter = RegionAccuracy(data.isthing)
    preds = []
    needs_text = getattr(seg.backbone.strategy, "needs_text", False)
    for item in data:
        feats, hr, wr = _features(seg, item.image_path, text if needs_text else None)
        with torch.no_grad():
            gt = [s.category_index for s in item.segments]
            if mode == "boxes":
                boxes = torch.tensor([s.bbox for s in item.segments]).float()
                boxes[:, 0::2] *= wr / W
                boxes[:, 1::2] *= hr / H
                labels = clf(feats, text, boxes=[boxes])["labels"]
            else:
                masks = torch.stack([torch.from_numpy(s.mask) for s in item.segments])
                masks = F.interpolate(masks[:, None].float(), size=(hr, wr))[:, 0] > 0.5
                labels = clf(feats, text, masks=[masks])["labels"]
        meter.update(labels, gt)
        preds.append(labels.tolist())
    return meter.compute(), preds


def test_evaluate_regions_matches_recomputation(panoptic, tiny_preset):
    json_path, png_dir, img_dir, _ = panoptic
    data = load_coco_panoptic(json_path, png_dir, img_dir)
    seg = build_segmentor(tiny_preset("naclip"), device="cpu", short_side=48)
    _use_region_prototypes(seg, data)
    res = evaluate_regions(
        seg, data, mode=["boxes", "masks"], progress=False, return_predictions=True
    )
    assert res["num_images"] == 2 and res["num_regions"] == 7
    assert res["num_empty_masks"] == 0
    assert res["class_names"] == ["person", "dog", "wall"]
    for mode in ("boxes", "masks"):
        expected, preds = _recompute(seg, data, mode)
        assert [p[mode] for p in res["predictions"]] == preds
        assert [p["gt"] for p in res["predictions"]] == [[2, 0, 1], [2, 0, 0, 1]]
        for group in ("things", "stuff", "all"):
            for key in ("top1", "mean_acc", "num_regions"):
                assert res[mode][group][key] == pytest.approx(expected[group][key]), (mode, group)
    # image 0's boxes are the class prototypes: classified exactly; predictions not constant
    assert res["predictions"][0]["boxes"] == [2, 0, 1]
    assert len({x for p in res["predictions"] for x in p["masks"]}) > 1
    assert "predictions" not in evaluate_regions(seg, data, mode="boxes", progress=False)
    single = evaluate_regions(seg, data, mode="masks", progress=False)
    assert set(single) - {"num_images", "num_regions", "num_empty_masks", "class_names"} == {
        "masks"
    }
    assert single["masks"]["all"] == res["masks"]["all"]
    with pytest.raises(ValueError, match="mode"):
        evaluate_regions(seg, data, mode="points", progress=False)


def test_regions_of_a_strategy_that_reads_the_vocabulary(panoptic, tiny_preset):
    """ResCLIP's features depend on the class names (semantic feedback): the region evaluation
    gives them, and its predictions equal a recomputation with them."""
    json_path, png_dir, img_dir, _ = panoptic
    data = load_coco_panoptic(json_path, png_dir, img_dir)
    kwargs = {"rcs_layers": (1,), "temp_thd": 0.0}  # the tiny tower's blocks
    seg = build_segmentor(
        tiny_preset("resclip"), device="cpu", short_side=48, strategy_kwargs=kwargs
    )
    assert seg.backbone.strategy.needs_text
    res = evaluate_regions(
        seg, data, mode=["boxes", "masks"], progress=False, return_predictions=True
    )
    for mode in ("boxes", "masks"):
        _, preds = _recompute(seg, data, mode)
        assert [p[mode] for p in res["predictions"]] == preds


def _tool():
    spec = importlib.util.spec_from_file_location("eval_regions", ROOT / "tools/eval_regions.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_writes_results(panoptic, tiny_preset, tmp_path, capsys):
    json_path, png_dir, img_dir, _ = panoptic
    tool = _tool()
    out = tmp_path / "out"
    args = [
        "--config", str(tiny_preset("naclip")), "--panoptic-json", str(json_path),
        "--panoptic-dir", str(png_dir), "--images", str(img_dir), "--limit", "1",
        "--output", str(out), "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    assert tool.main([*args, "--mode", "boxes", "masks", "model.short_side=48"]) == 0
    printed = capsys.readouterr().out
    assert "| boxes |" in printed and "| masks |" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["num_images"] == 1 and results["num_regions"] == 3
    assert results["short_side"] == 48 and results["modes"] == ["boxes", "masks"]
    for mode in ("boxes", "masks"):
        assert 0 <= results[mode]["all"]["top1"] <= 100
        assert results[mode]["things"]["num_regions"] == 2
    # a user error is one line on stderr, exit code 2
    bad = [a if a != str(json_path) else str(tmp_path / "missing.json") for a in args]
    from ovdense.utils.cli import run_cli

    assert run_cli(tool.main, bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Panoptic JSON not found") and "\n" not in err


def test_cli_on_an_instance_dataset(tmp_path, tiny_preset, monkeypatch, capsys):
    """``--dataset shapes_det``: the generated COCO-instances set, seen / held-out columns whose
    region counts add up to all regions."""
    import ovdense.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "VAL_IMAGES", 3)
    out = tmp_path / "out"
    args = [
        "--config", str(tiny_preset("maskclip")), "--dataset", "shapes_det",
        "--data-root", str(tmp_path / "data"), "--output", str(out), "--device", "cpu",
        "--no-progress", "--mode", "boxes", "model.short_side=64",
    ]  # fmt: skip
    assert _tool().main(args) == 0
    assert "| mode | seen top-1 | seen mAcc | held-out top-1" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    n_regions = sum(len(synthetic.generate_scene(1, i, 128, "val").labels) for i in range(3))
    assert res["num_regions"] == n_regions and res["groups"] == ["seen", "held_out"]
    boxes = res["boxes"]
    assert boxes["seen"]["num_regions"] + boxes["held_out"]["num_regions"] == n_regions
    # --dataset and the panoptic paths exclude each other
    with pytest.raises(SystemExit):
        _tool().main([*args, "--images", str(tmp_path)])


class _ConstantRefiner(torch.nn.Module):
    """Replaces every feature cell by one vector (so every region gets its class)."""

    def __init__(self, vector: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("vector", vector)

    def forward(self, features, images):
        from ovdense.modeling.backbones import DenseFeatures

        d = features.dense
        dense = self.vector.view(1, -1, 1, 1).expand(d.shape[0], -1, *d.shape[-2:]).contiguous()
        return DenseFeatures(dense=dense, stride=features.stride), {}


def test_regions_use_the_segmentors_refiner(panoptic, tiny_preset):
    """Region features are what the segmentor classifies: backbone, then its refiner."""
    json_path, png_dir, img_dir, _ = panoptic
    data = load_coco_panoptic(json_path, png_dir, img_dir)
    seg = build_segmentor(tiny_preset("naclip"), device="cpu", short_side=48)
    dog = seg.encode_text(data.class_names).embeds[1]
    seg.refiner = _ConstantRefiner(dog)
    res = evaluate_regions(
        seg, data, mode=["boxes", "masks"], progress=False, return_predictions=True
    )
    for p in res["predictions"]:
        assert p["boxes"] == [1] * len(p["gt"]) and p["masks"] == [1] * len(p["gt"])
