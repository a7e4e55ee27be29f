"""`ovdense demo --sam-masks` end to end (tiny random SAM + the bundled shapes CLIP) on an
image and a short video; its one-line errors; the shared ``--sam-*`` options."""

import argparse
import json

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from sam_common import OBJECTS

from ovdense.cli import demo
from ovdense.data.synthetic import generate_scene
from ovdense.sam import SAM_KINDS, decode_rle, missing_checkpoint_message
from ovdense.utils.cli import SAM_KIND_CHOICES, add_sam_arguments, run_cli

CLASSES = ",".join(OBJECTS)
#: A random tiny SAM predicts poor IoUs: its quality filters are off so that masks come out.
TINY = [
    "--sam-masks",
    "--sam-tiny-random",
    "--sam-points-per-side",
    "4",
    "--sam-pred-iou-thresh",
    "0",
    "--sam-stability-thresh",
    "0",
]


def _argv(inp, out, *extra):
    return [
        "--config", "shapes/maskclip", "--input", str(inp), "--classes", CLASSES,
        "--output", str(out), "--device", "cpu", *extra,
    ]  # fmt: skip


def test_image_end_to_end(tmp_path, scene, capsys):
    Image.fromarray(scene.image).save(tmp_path / "scene.png")
    out = tmp_path / "out"
    assert run_cli(demo.main, _argv(tmp_path / "scene.png", out, *TINY)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["scene.json", "scene_overlay.jpg"]
    doc = json.loads((out / "scene.json").read_text())
    assert doc["image"].endswith("scene.png") and (doc["height"], doc["width"]) == (128, 128)
    assert doc["classes"] == OBJECTS
    assert [c["id"] for c in doc["categories"]] == [1, 2, 3]
    assert len(doc["instances"]) >= 1
    masks = [decode_rle(a["segmentation"]) for a in doc["instances"]]
    for a, m in zip(doc["instances"], masks):
        assert m.shape == (128, 128) and a["area"] == m.sum() > 0
        assert a["category_name"] == OBJECTS[a["category_id"] - 1]
        assert 0 < a["score"] <= 1
    # the class areas are the union of each class's instance masks
    for name, frac in doc["present"].items():
        union = np.any(
            [m for a, m in zip(doc["instances"], masks) if a["category_name"] == name], 0
        )
        assert frac == pytest.approx(union.mean(), abs=1e-5)
    gt = COCO()
    gt.dataset = {"images": [{"id": 0, "height": 128, "width": 128}],
                  "categories": doc["categories"], "annotations": []}  # fmt: skip
    gt.createIndex()
    res = gt.loadRes(json.loads(json.dumps(doc["instances"])))
    for ann, m in zip(res.loadAnns(res.getAnnIds()), masks):
        np.testing.assert_array_equal(res.annToMask(ann).astype(bool), m)
    vis = np.asarray(Image.open(out / "scene_overlay.jpg"))
    assert vis.shape[0] >= 256  # small images are enlarged for the legend
    assert "Wrote 1 result(s)" in capsys.readouterr().out


def test_folder_where_no_mask_survives(tmp_path, scene):
    """A folder run whose filter keeps no mask: empty instance lists, still written."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(scene.image).save(folder / "a.png")
    Image.fromarray(scene.image[:96]).save(folder / "b.png")
    out = tmp_path / "out"
    assert run_cli(demo.main, _argv(folder, out, *TINY, "--sam-min-area", "100000")) == 0
    for stem, size in (("a", (128, 128)), ("b", (96, 128))):
        doc = json.loads((out / f"{stem}.json").read_text())
        assert doc["instances"] == [] and doc["present"] == {}
        assert (doc["height"], doc["width"]) == size
        vis = np.asarray(Image.open(out / f"{stem}_overlay.jpg"))
        assert vis.shape == (*size, 3)  # nothing drawn, no legend


def _write_video(path, frames=3, size=64):
    """Shapes scenes with the objects moving one step per frame (MJPG .avi)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 5.0, (size, size))
    assert writer.isOpened()
    for t in range(frames):
        img = generate_scene(0, 0, size=size, objects=OBJECTS).image
        writer.write(cv2.cvtColor(np.roll(img, 2 * t, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_video_end_to_end(tmp_path):
    video = _write_video(tmp_path / "clip.avi")
    out = tmp_path / "out"
    assert run_cli(demo.main, _argv(video, out, *TINY)) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "clip.json", "clip_000000.json", "clip_000001.json", "clip_000002.json",
        "clip_overlay.mp4",
    ]  # fmt: skip
    cap = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 3
    summary = json.loads((out / "clip.json").read_text())
    assert summary["frames"] == 3 and summary["classes"] == OBJECTS
    for i in range(3):
        doc = json.loads((out / f"clip_{i:06d}.json").read_text())
        assert (
            doc["frame"] == i and doc["image_id"] == i and (doc["height"], doc["width"]) == (64, 64)
        )
        for a in doc["instances"]:
            assert decode_rle(a["segmentation"]).shape == (64, 64)


def test_missing_checkpoint_is_one_sentence(tmp_path, scene, capsys):
    Image.fromarray(scene.image).save(tmp_path / "scene.png")
    argv = _argv(tmp_path / "scene.png", tmp_path / "out", "--sam-masks", "--sam-kind", "vit_l")
    assert run_cli(demo.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {missing_checkpoint_message('vit_l', '--sam-checkpoint')}"
    assert err.count("\n") == 0 and "sam_vit_l_0b3195.pth" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    argv += ["--sam-checkpoint", str(tmp_path / "nope.pth")]
    assert run_cli(demo.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert "nope.pth" in err and "is not a file" in err and err.count("\n") == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sam-masks", "--smooth", "0.5"], "--smooth"),
        (["--sam-masks", "--save-frames"], "--save-frames"),
        (["--sam-checkpoint", "x.pth"], "need --sam-masks"),
        (["--sam-masks", "--sam-kind", "vit_x"], "invalid choice"),
        (["--sam-masks", "--sam-nms-iou", "2"], "[0, 1]"),
    ],
)
def test_option_errors(tmp_path, extra, message, capsys):
    assert run_cli(demo.main, _argv(tmp_path / "x.png", tmp_path / "o", *extra)) == 2
    assert message in capsys.readouterr().err


def test_add_sam_arguments_defaults():
    p = argparse.ArgumentParser()
    add_sam_arguments(p)
    args = p.parse_args([])
    assert SAM_KIND_CHOICES == SAM_KINDS
    assert not args.sam_masks and args.sam_kind == "vit_b" and args.sam_checkpoint is None
    # segment-anything's SamAutomaticMaskGenerator defaults
    assert (args.sam_points_per_side, args.sam_pred_iou_thresh, args.sam_stability_thresh) == (
        32, 0.88, 0.95,
    )  # fmt: skip
    assert args.sam_crop_layers == 0 and args.sam_crop_overlap == pytest.approx(512 / 1500)
    assert "--sam-tiny-random" not in p.format_help()  # a test option, hidden


def test_sam_refine_is_mounted_on_the_preset(tmp_path, scene, monkeypatch):
    """``--sam-refine`` mounts SAMRefiner on the preset: the label PNG equals the Python API's
    labels with the same refiner (masks accepted whatever their IoU, so that they matter)."""
    from ovdense import build_segmentor
    from ovdense.predictor import Predictor
    from ovdense.sam import tiny_sam
    from ovdense.sam.refine import attach_sam_refiner
    from ovdense.utils.visualizer import load_label_png

    mounted = []

    def attach_all_masks(segmentor, kind, checkpoint, **kw):
        mounted.append(attach_sam_refiner(segmentor, kind, checkpoint, iou_thresh=-1e9, **kw))
        return mounted[-1]

    monkeypatch.setattr(demo, "attach_sam_refiner", attach_all_masks)
    Image.fromarray(scene.image).save(tmp_path / "scene.png")
    argv = _argv(tmp_path / "scene.png", tmp_path / "out", "--sam-refine", "--sam-tiny-random")
    assert run_cli(demo.main, argv) == 0
    assert len(mounted) == 1 and mounted[0].sam is not None
    labels = load_label_png(tmp_path / "out" / "scene_labels.png")

    def predict(seg):
        pred = Predictor(seg)
        pred.set_image(scene.image)
        return np.asarray(pred.predict(OBJECTS).labels)

    seg = build_segmentor("shapes/maskclip", device="cpu")
    plain = predict(seg)
    attach_sam_refiner(seg, sam=tiny_sam(), iou_thresh=-1e9)
    refined = predict(seg)
    np.testing.assert_array_equal(labels, refined)
    assert (refined != plain).any()  # the refinement changed something: the test can fail


def test_sam_refine_missing_checkpoint_and_conflict(tmp_path, scene, capsys):
    Image.fromarray(scene.image).save(tmp_path / "scene.png")
    argv = _argv(tmp_path / "scene.png", tmp_path / "out", "--sam-refine")
    assert run_cli(demo.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {missing_checkpoint_message('vit_b', '--sam-checkpoint')}"
    assert run_cli(demo.main, [*argv, "--sam-masks"]) == 2
    assert "pick one" in capsys.readouterr().err
