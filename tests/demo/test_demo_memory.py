"""Memory of the demo path on large images: the overlay holds no full-size float copies, the
labels-only decode works on chunks of names sized to the image."""

import tracemalloc

import numpy as np
import pytest
import torch

from ovdense import Predictor
from ovdense.modeling.segmentors import TrainingFreeSegmentor
from ovdense.utils.visualizer import legend_entries, overlay


def _traced_peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_overlay_makes_no_full_size_temporaries():
    h, w = 1000, 1500
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    lab = np.random.default_rng(1).integers(-1, 21, (h, w)).astype(np.int64)
    names = [f"class {i}" for i in range(20)]
    out, peak = _traced_peak(lambda: overlay(img, lab, names, alpha=0.3))
    # the output is the only full-size array; the rest is a few MB of blocks (the former code
    # made float32 copies of image, colours and mix: ~55 bytes per pixel)
    assert peak - out.nbytes < 4_000_000
    # same values as the plain full-size formula
    valid = (lab >= 0) & (lab < 20)
    pal = np.asarray(
        overlay(np.zeros((1, 20, 3), np.uint8), np.arange(20)[None], names, 1.0, legend=False)
    )[0]
    want = img.copy()
    mixed = 0.7 * img[valid].astype(np.float32) + np.float32(0.3) * pal[lab[valid]]
    want[valid] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    assert np.abs(out[:h, :w].astype(int) - want).max() <= 1
    assert np.array_equal(out[:h, :w][~valid], img[~valid])


def test_legend_counts_without_full_size_copies():
    lab = np.random.default_rng(1).integers(-1, 6, (1000, 1500)).astype(np.int64)
    entries, peak = _traced_peak(lambda: legend_entries(lab, list("abcde")))
    assert peak < 1_000_000  # former code: a masked int64 copy, ~10 bytes per pixel
    counts = np.bincount(lab[(lab >= 0) & (lab < 5)], minlength=5)
    assert [(e.index, e.area) for e in entries] == sorted(
        ((i, int(c)) for i, c in enumerate(counts)), key=lambda t: -t[1]
    )


@pytest.fixture()
def seg(tiny_clip):
    return TrainingFreeSegmentor(
        tiny_clip, "naclip", templates="single", short_side=40, window=32, stride=16
    )


def test_labels_only_predict_uses_image_sized_name_chunks(seg, monkeypatch):
    calls = []
    real = seg.decode

    def spy(*args, **kwargs):
        calls.append(kwargs.get("name_chunk"))
        return real(*args, **kwargs)

    monkeypatch.setattr(seg, "decode", spy)
    pred = Predictor(seg)
    img = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    pred.set_image(img)
    names = [f"thing {i}" for i in range(40)]
    full = pred.predict(names)  # with probabilities: no chunking
    assert calls == [None]

    pred.labels_only_chunk_bytes = 8 * 60 * 80 * 12  # room for 12 names at this size
    lean = pred.predict(names, return_probs=False)
    assert calls[-1] == 12 and lean.probs is None
    assert np.array_equal(lean.labels, full.labels)

    pred.labels_only_chunk_bytes = 1  # never below 8 names (time), never above 32
    pred.predict(names, return_probs=False)
    assert calls[-1] == 8
    pred.labels_only_chunk_bytes = 2**40
    pred.predict(names, return_probs=False)
    assert calls[-1] == 32


def test_default_chunk_fits_large_images():
    pred = Predictor.__new__(Predictor)
    assert Predictor.labels_only_chunk_bytes == 512 * 2**20
    assert pred.name_chunk_for(500, 500) == 32
    assert pred.name_chunk_for(1000, 2000) == 32  # 512 MiB / (8 B x 2 M pixels) = 33 -> 32
    assert pred.name_chunk_for(2000, 3000) == 11  # 512 MiB / (8 B x 6 M pixels) = 11.2
    assert pred.name_chunk_for(4000, 6000) == 8  # 2.8, raised to the floor of 8


def test_set_image_does_not_touch_the_callers_array(seg):
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    keep = img.copy()
    pred = Predictor(seg)
    pred.set_image(img)
    assert np.array_equal(img, keep)
    readonly = keep.copy()
    readonly.setflags(write=False)
    pred.set_image(readonly)
    assert np.array_equal(pred.image, keep)
    ref = seg.encode_image(torch.from_numpy(keep).permute(2, 0, 1)[None].float() / 255)
    torch.testing.assert_close(pred._features.dense, ref.dense)
