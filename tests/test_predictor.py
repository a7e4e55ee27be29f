"""Predictor: image cached once, many vocabularies; odd and bad images."""

import numpy as np
import pytest
import torch
from PIL import Image

from ovdense import Predictor
from ovdense.modeling.segmentors import TrainingFreeSegmentor


@pytest.fixture()
def seg(tiny_clip):
    return TrainingFreeSegmentor(
        tiny_clip, "naclip", templates="single", short_side=40, window=32, stride=16
    )


def _rgb(h=30, w=45, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_image_is_encoded_once(seg):
    calls = []
    handle = seg.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        pred = Predictor(seg)
        pred.set_image(_rgb())
        n = len(calls)
        assert n > 0
        a = pred.predict(["cat", "dog"])
        b = pred.predict(["background", "cat", "sofa, couch"], prob_thd=0.4)
        assert len(calls) == n  # no image re-encoding
    finally:
        handle.remove()
    assert a.labels.shape == (30, 45) and a.probs.shape == (2, 30, 45)
    assert b.classes == ["background", "cat", "sofa"]
    assert set(np.unique(b.labels)) <= {0, 1, 2}
    # prob_thd really applied: every pixel below it is background
    low = b.probs.max(0).values.numpy() < 0.4
    assert (b.labels[low] == 0).all()


def test_predictor_equals_segmentor(seg):
    img = _rgb(seed=3)
    pred = Predictor(seg)
    pred.set_image(img)
    out = pred.predict(["a", "b", "c"])
    ref = seg(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, ["a", "b", "c"])
    torch.testing.assert_close(out.probs, ref.probs[0])
    assert np.array_equal(out.labels, ref.labels[0].numpy())
    counts = np.bincount(out.labels.ravel(), minlength=3)
    assert [counts[i] for i in out.present_classes()] == sorted(counts[counts > 0], reverse=True)


def test_predict_before_set_image(seg):
    with pytest.raises(RuntimeError, match="set_image"):
        Predictor(seg).predict(["a"])


def test_odd_image_files_are_converted(seg, tmp_path):
    gray = np.random.default_rng(1).integers(0, 256, (30, 45), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    rgba = np.dstack([_rgb(seed=2), np.full((30, 45), 77, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    gray16 = gray.astype(np.uint16) * 257
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    pred = Predictor(seg)
    results = {}
    for name in ("gray", "rgba", "gray16"):
        pred.set_image(tmp_path / f"{name}.png")
        results[name] = pred.predict(["x", "y"]).probs
    pred.set_image(np.dstack([gray] * 3))
    torch.testing.assert_close(results["gray"], pred.predict(["x", "y"]).probs)
    torch.testing.assert_close(results["gray16"], results["gray"])
    pred.set_image(rgba[..., :3])
    torch.testing.assert_close(results["rgba"], pred.predict(["x", "y"]).probs)


def test_bad_image_inputs(seg, tmp_path):
    pred = Predictor(seg)
    with pytest.raises(FileNotFoundError, match="nothere.jpg"):
        pred.set_image(tmp_path / "nothere.jpg")
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="corrupt.png"):
        pred.set_image(bad)
    assert not pred.is_image_set
    pred.set_image(_rgb())
    with pytest.raises(ValueError, match="empty"):
        pred.predict([])
    with pytest.raises(ValueError, match="Duplicated class"):
        pred.predict(["cat", "dog", "cat"])


def test_predict_batch_equals_one_at_a_time(seg, tmp_path):
    Image.fromarray(_rgb(52, 33, seed=5)).save(tmp_path / "tall.png")
    images = [_rgb(seed=4), tmp_path / "tall.png", _rgb(24, 24, seed=6)]
    pred = Predictor(seg)
    pred.set_image(_rgb(seed=9))
    calls = []
    handle = seg.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        outs = pred.predict_batch(images, ["background", "cat", "sofa, couch"])
    finally:
        handle.remove()
    # 6 + 6 + 4 windows of 32 px, 8 per call: 2 backbone calls (one image at a time: 3)
    assert len(calls) == 2
    assert pred.image.shape == (30, 45, 3)  # the set image is kept
    assert len(outs) == 3
    labels_only = pred.predict_batch(images, ["background", "cat", "sofa, couch"], 0.4, False)
    single = Predictor(seg)
    for image, out, lab in zip(images, outs, labels_only, strict=True):
        single.set_image(image)
        ref = single.predict(["background", "cat", "sofa, couch"])
        assert out.classes == ["background", "cat", "sofa"]
        assert out.labels.shape == ref.labels.shape == single.image.shape[:2]
        assert np.array_equal(out.labels, ref.labels)
        torch.testing.assert_close(out.probs, ref.probs, atol=1e-5, rtol=1e-5)
        ref_thd = single.predict(["background", "cat", "sofa, couch"], 0.4, return_probs=False)
        assert lab.probs is None and np.array_equal(lab.labels, ref_thd.labels)


def test_predict_batch_bad_inputs(seg, tiny_clip, tmp_path):
    pred = Predictor(seg)
    with pytest.raises(ValueError, match="empty"):
        pred.predict_batch([], ["a"])
    with pytest.raises(TypeError, match="sequence of images"):
        pred.predict_batch(_rgb(), ["a"])
    with pytest.raises(FileNotFoundError, match=r"images\[1\].*nothere.jpg"):
        pred.predict_batch([_rgb(), tmp_path / "nothere.jpg"], ["a"])
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)
    with pytest.raises(ValueError, match=r"images\[2\].*corrupt.png"):
        pred.predict_batch([_rgb(), _rgb(), bad], ["a"])
    raw = TrainingFreeSegmentor(tiny_clip, "naclip", templates="single", short_side=None)
    with pytest.raises(ValueError, match=r"images\[1\].*smaller than one"):
        Predictor(raw).predict_batch([_rgb(), _rgb(4, 4)], ["a"])
    with pytest.raises(ValueError, match="empty"):
        pred.predict_batch([_rgb()], [])
