"""Inputs that used to give silently wrong results: thresholds without a background class,
out-of-range values, 0..255 images, case-only duplicate classes, the synonym syntax."""

from __future__ import annotations

import warnings

import pytest
import torch

from ovdense.config import instantiate
from ovdense.model_zoo import get_config
from ovdense.modeling.segmentors import TrainingFreeSegmentor
from ovdense.modeling.text import Vocabulary


def _seg(clip, **kw):
    kw.setdefault("templates", "single")
    kw.setdefault("short_side", None)
    kw.setdefault("window", None)
    return TrainingFreeSegmentor(clip, **kw)


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("return_probs", [True, False])
def test_threshold_needs_a_background_class(tiny_clip, image, return_probs):
    seg = _seg(tiny_clip, prob_thd=0.9)
    feats = seg.encode_image(image)
    with pytest.raises(ValueError, match="no class of this vocabulary is named background"):
        seg.decode(feats, seg.encode_text(["cat", "dog"]), return_probs=return_probs)
    # found by name wherever it is; uncertain pixels (all, at 0.9 with 3 classes) go to it
    out = seg.decode(
        feats, seg.encode_text(["cat", "Background", "dog"]), return_probs=return_probs
    )
    off = seg.decode(feats, seg.encode_text(["cat", "Background", "dog"]), 0.0, return_probs)
    top = _seg(tiny_clip).decode(feats, seg.encode_text(["cat", "Background", "dog"])).probs
    uncertain = top.max(dim=1).values < 0.9
    assert uncertain.any()
    assert torch.equal(out.labels[uncertain], torch.ones_like(out.labels[uncertain]))
    assert torch.equal(out.labels[~uncertain], off.labels[~uncertain])
    # an explicit index is honoured whatever the class's name (benchmarks' class 0)
    explicit = _seg(tiny_clip, prob_thd=0.9, background_index=2)
    text = seg.encode_text(["cat", "dog", "sky|wall"])
    out2 = explicit.decode(feats, text, return_probs=return_probs)
    uncertain2 = _seg(tiny_clip).decode(feats, text).probs.max(dim=1).values < 0.9
    assert uncertain2.any() and (out2.labels[uncertain2] == 2).all()


def test_threshold_ranges(tiny_clip, image):
    for bad in (1.5, -0.1, float("nan"), "high"):
        with pytest.raises(ValueError, match="prob_thd: expected a number >= 0 and <= 1"):
            _seg(tiny_clip, prob_thd=bad)
    with pytest.raises(ValueError, match="area_thd"):
        _seg(tiny_clip, area_thd=2.0)
    seg = _seg(tiny_clip)
    with pytest.raises(ValueError, match="prob_thd"):
        seg.decode(seg.encode_image(image), seg.encode_text(["background", "a"]), prob_thd=3.0)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("short_side", "abc", "short_side"),
        ("window", -1, "window: expected an integer >= 1 or None, got -1"),
        ("stride", 0, "stride"),
        ("window_batch_size", 0, "window_batch_size"),
        ("logit_scale", 0, "logit_scale: expected a number > 0"),
        ("precision", "fp8", "precision"),
    ],
)
def test_config_values_checked_when_built(tiny_preset, key, value, message):
    cfg = get_config(tiny_preset("maskclip"), [f"model.{key}={value!r}"])
    with pytest.raises(ValueError, match=message) as err:
        instantiate(cfg.model)
    assert "\n" not in str(err.value)


def test_images_in_0_255_are_refused(tiny_clip, image):
    seg = _seg(tiny_clip)
    with pytest.raises(ValueError, match="0..255 pixel values: divide by 255"):
        seg.encode_image(image * 255)
    with pytest.raises(ValueError, match="normalised with a mean and std"):
        seg.encode_image((image - 0.5) / 0.25)
    u8 = (image * 255).round().to(torch.uint8)
    a = seg(u8, ["a", "b"]).probs
    b = seg(u8.float() / 255, ["a", "b"]).probs
    torch.testing.assert_close(a, b)


def test_case_only_duplicates():
    with pytest.raises(ValueError, match="Duplicated class"):
        Vocabulary(["Red Circle", "red circle"])
    with pytest.raises(ValueError, match="Duplicated class"):
        Vocabulary(["sofa|couch", "Couch, sofa"])
    with pytest.raises(ValueError, match="repeats"):
        Vocabulary(["cat|Cat"])
    with pytest.warns(UserWarning, match="lowercases"):
        Vocabulary(["Cat", "cat|kitten"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Vocabulary(["cat", "dog", "Straße", "naïve"])  # distinct, non-ASCII: no warning


def test_one_synonym_syntax(tmp_path):
    expected = Vocabulary([["cat"], ["sofa", "couch"], ["tv", "monitor"]])
    assert Vocabulary(["cat", "sofa|couch", "tv, monitor"]) == expected
    assert Vocabulary.parse("cat,sofa|couch,tv|monitor") == expected
    f = tmp_path / "classes.txt"
    f.write_text("cat\nsofa|couch\n\ntv, monitor\n", encoding="utf-8")
    assert Vocabulary.from_file(f) == expected
    # names verbatim when asked (benchmark files under a paper's parsing rule)
    assert Vocabulary(["a|b"], synonym_sep=None).classes == (("a|b",),)


def test_binary_class_file_is_named(tmp_path):
    f = tmp_path / "photo.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(ValueError, match="photo.png is not a UTF-8 text file"):
        Vocabulary.from_file(f)
