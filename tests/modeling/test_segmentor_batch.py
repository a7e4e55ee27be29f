"""Batches of images of different sizes (Segmentor.encode_images / segment_batch): one result
per image, equal to one image at a time, with the windows of all images sharing backbone
calls."""

import pytest
import torch
import torch.nn.functional as F

from ovdense.modeling.refiners import CLIPDINOiserHead
from ovdense.modeling.segmentors import CLIPDINOiserSegmentor, TrainingFreeSegmentor

VOCAB = ["background", "cat", "dog", "sofa, couch"]


def _blocky(seed: int, h: int, w: int) -> torch.Tensor:
    """A random 5 x 7 mosaic ``[3, h, w]`` in ``[0, 1]`` (regions, so that labels vary)."""
    torch.manual_seed(seed)
    return F.interpolate(torch.rand(1, 3, 5, 7), size=(h, w), mode="nearest")[0]


def _dinoiser_head(seed: int = 1) -> CLIPDINOiserHead:
    torch.manual_seed(seed)
    head = CLIPDINOiserHead(64, delta=0.99)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(0.3 * torch.randn_like(p))
        head.bkg_decoder.bias.fill_(0.0)
    return head.eval()


#: (windowing options, image sizes): several windows of one size for every image; windows of
#: different sizes (an image narrower than a window); whole images of different sizes.
CONFIGS = {
    "windows": (
        {"short_side": 40, "window": 32, "stride": 16},
        [(30, 45), (50, 28), (24, 24)],
    ),
    "mixed-windows": (
        {"short_side": None, "window": 32, "stride": 16},
        [(40, 50), (20, 60), (33, 33)],
    ),
    "whole-image": (
        {"short_side": None, "window": None, "stride": None},
        [(30, 45), (16, 40), (30, 45)],
    ),
}


def _build(kind, clip, order, options):
    if kind == "naclip":
        return TrainingFreeSegmentor(
            clip, "naclip", templates="single", window_batch_size=3, **options
        )
    seg = CLIPDINOiserSegmentor(
        clip,
        head=_dinoiser_head(),
        templates="single",
        logit_scale=100.0,
        window_batch_size=3,
        decode_order=order,
        **options,
    )
    assert seg.decode_order == order
    return seg


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize(
    "kind, order", [("naclip", "ovdense"), ("dinoiser", "ovdense"), ("dinoiser", "paper")]
)
def test_batch_equals_one_at_a_time(tiny_clip, config, kind, order):
    options, sizes = CONFIGS[config]
    seg = _build(kind, tiny_clip, order, options)
    images = [_blocky(i, h, w) for i, (h, w) in enumerate(sizes)]
    outs = seg.segment_batch(images, VOCAB)
    assert len(outs) == len(images)
    for image, out in zip(images, outs, strict=True):
        ref = seg(image[None], VOCAB)
        h, w = image.shape[-2:]
        assert out.labels.shape == (1, h, w) and out.probs.shape == (1, 4, h, w)
        assert torch.equal(out.labels, ref.labels)
        torch.testing.assert_close(out.probs, ref.probs, atol=1e-5, rtol=1e-5)
        assert out.vocabulary.display_names == ["background", "cat", "dog", "sofa"]
    # labels only (chunked decoding) and a threshold give the same labels too
    thd = seg.segment_batch(images, VOCAB, prob_thd=0.5, return_probs=False)
    for image, out in zip(images, thd, strict=True):
        ref = seg.decode(seg.encode_image(image[None]), seg.encode_text(VOCAB), prob_thd=0.5)
        assert out.probs is None and torch.equal(out.labels, ref.labels)


def test_features_split_back_per_image(tiny_clip):
    seg = _build("dinoiser", tiny_clip, "paper", CONFIGS["mixed-windows"][0])
    images = [_blocky(i, h, w) for i, (h, w) in enumerate(CONFIGS["mixed-windows"][1])]
    feats = seg.encode_images(images)
    for image, f in zip(images, feats, strict=True):
        ref = seg.encode_image(image[None])
        assert f.batch_size == 1 and f.windows == ref.windows
        assert f.image_size == ref.image_size and f.resized_size == ref.resized_size
        torch.testing.assert_close(f.dense, ref.dense, atol=1e-5, rtol=1e-5)
        assert sorted(f.aux) == sorted(ref.aux) == ["background"]
        torch.testing.assert_close(f.aux["background"], ref.aux["background"])


def _count_backbone_calls(seg, fn):
    calls = []
    handle = seg.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        result = fn()
    finally:
        handle.remove()
    return len(calls), result


def test_small_images_share_backbone_calls(tiny_clip):
    seg = TrainingFreeSegmentor(
        tiny_clip,
        "naclip",
        templates="single",
        short_side=None,
        window=32,
        stride=32,
        window_batch_size=8,
    )
    # ten small images: one 24 x 24 window each (two sizes), and one with four 32 x 32 windows
    sizes = [(24, 24)] * 6 + [(32, 32)] * 3 + [(64, 64)]
    images = [_blocky(i, h, w) for i, (h, w) in enumerate(sizes)]
    single, refs = _count_backbone_calls(seg, lambda: [seg(im[None], VOCAB) for im in images])
    batched, outs = _count_backbone_calls(seg, lambda: seg.segment_batch(images, VOCAB))
    assert single == 10
    assert batched == 2  # 6 crops of 24 px, then 3 + 4 crops of 32 px
    for ref, out in zip(refs, outs, strict=True):
        assert torch.equal(out.labels, ref.labels)
        torch.testing.assert_close(out.probs, ref.probs, atol=1e-5, rtol=1e-5)
    # window_batch_size still caps a call
    seg.window_batch_size = 2
    batched, _ = _count_backbone_calls(seg, lambda: seg.encode_images(images))
    assert batched == 3 + 4  # ceil(6 / 2) + ceil(7 / 2)


def test_batch_inputs(tiny_clip):
    seg = TrainingFreeSegmentor(tiny_clip, "naclip", templates="single", short_side=40)
    with pytest.raises(ValueError, match="empty"):
        seg.segment_batch([], VOCAB)
    good = _blocky(0, 30, 30)
    with pytest.raises(ValueError, match=r"images\[1\].*\[0, 1\]"):
        seg.segment_batch([good, good * 255], VOCAB)
    with pytest.raises(ValueError, match=r"images\[2\]"):
        seg.encode_images([good, good, torch.rand(3, 30)])
    with pytest.raises(ValueError, match=r"images\[1\].*\[1, 3, H, W\]"):
        seg.encode_images([good, torch.rand(2, 3, 30, 30)])
    # uint8, [1, 3, H, W] items and a [B, 3, H, W] tensor are accepted
    as_uint8 = (good * 255).round().to(torch.uint8)
    a, b = seg.segment_batch([as_uint8, good[None]], VOCAB)
    assert a.labels.shape == b.labels.shape == (1, 30, 30)
    assert len(seg.encode_images(torch.stack([good, good]))) == 2
