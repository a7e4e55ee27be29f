"""TrainingFreeSegmentor against independent re-computations of the inference protocol."""

import pytest
import torch
import torch.nn.functional as F

from ovdense.modeling.segmentors import TrainingFreeSegmentor, rescale_size, sliding_windows


def _seg(clip, **kw):
    kw.setdefault("templates", "single")
    return TrainingFreeSegmentor(clip, **kw)


def _reference_slide(seg, image01, names_embeds, crop, stride):
    """mmseg slide_inference written out: one backbone call per window, no batching."""
    x = seg.backbone.normalize(image01)
    _, _, h, w = x.shape
    n = names_embeds.shape[0]
    preds = torch.zeros(1, n, h, w)
    count = torch.zeros(1, 1, h, w)
    h_grids = max(h - crop + stride - 1, 0) // stride + 1
    w_grids = max(w - crop + stride - 1, 0) // stride + 1
    for hi in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi * stride, wi * stride
            y2, x2 = min(y1 + crop, h), min(x1 + crop, w)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            dense = seg.backbone(x[:, :, y1:y2, x1:x2]).dense
            logit = torch.einsum("bdhw,nd->bnhw", dense, names_embeds)
            logit = F.interpolate(logit, size=(y2 - y1, x2 - x1), mode="bilinear")
            preds += F.pad(logit, (x1, w - x2, y1, h - y2))
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


def test_rescale_size_matches_mmseg():
    assert rescale_size(375, 500, 336) == (336, 448)
    assert rescale_size(500, 375, 336) == (448, 336)
    assert rescale_size(100, 5000, 336, 2048) == (41, 2048)
    assert rescale_size(10, 10, 336) == (336, 336)  # up-scaling too
    assert rescale_size(123, 77, None) == (123, 77)


@pytest.mark.parametrize("hw", [(336, 448), (224, 224), (100, 300), (500, 225)])
def test_sliding_windows_cover_the_image(hw):
    h, w = hw
    wins = sliding_windows(h, w, 224, 112)
    cover = torch.zeros(h, w, dtype=torch.int32)
    sizes = set()
    for y1, y2, x1, x2 in wins:
        assert 0 <= y1 < y2 <= h and 0 <= x1 < x2 <= w
        cover[y1:y2, x1:x2] += 1
        sizes.add((y2 - y1, x2 - x1))
    assert cover.min() >= 1
    assert sizes == {(min(h, 224), min(w, 224))}
    assert max(y2 for _, y2, _, _ in wins) == h and max(x2 for *_, x2 in wins) == w
    assert sliding_windows(h, w, None, None) == [(0, h, 0, w)]


def test_slide_equals_reference_and_batching_is_exact(tiny_clip):
    torch.manual_seed(0)
    image = torch.rand(1, 3, 45, 70)
    vocab = ["background", "cat", "sofa, couch"]
    kw = dict(short_side=48, window=32, stride=16, strategy="sclip")
    one = _seg(tiny_clip, window_batch_size=1, **kw)
    many = _seg(tiny_clip, window_batch_size=7, **kw)
    f1, f7 = one.encode_image(image), many.encode_image(image)
    assert len(f1.windows) == 8  # 48x75: 2 rows x 4 columns of 32-px windows
    text = one.encode_text(vocab)
    l1, l7 = one.name_logits(f1, text), many.name_logits(f7, text)
    torch.testing.assert_close(l1, l7, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        resized = F.interpolate(image, size=f1.resized_size, mode="bilinear")
        ref = _reference_slide(one, resized, text.embeds, 32, 16)
        ref = F.interpolate(ref, size=(45, 70), mode="bilinear")
    torch.testing.assert_close(l1, ref, atol=1e-5, rtol=1e-5)


def test_one_window_covering_the_image_equals_whole_inference(tiny_clip):
    torch.manual_seed(1)
    image = torch.rand(1, 3, 40, 56)
    vocab = ["a", "b", "c, d"]
    whole = _seg(tiny_clip, short_side=None, window=None, strategy="naclip")
    big = _seg(tiny_clip, short_side=None, window=64, stride=32, strategy="naclip")
    out_w, out_b = whole(image, vocab), big(image, vocab)
    torch.testing.assert_close(out_w.probs, out_b.probs)
    assert torch.equal(out_w.labels, out_b.labels)
    # and whole-image inference equals the formula written out
    with torch.no_grad():
        dense = whole.backbone(whole.backbone.normalize(image)).dense
        emb = whole.encode_text(vocab).embeds
        logit = F.interpolate(
            torch.einsum("bdhw,nd->bnhw", dense, emb), size=(40, 56), mode="bilinear"
        )
        p = torch.softmax(40.0 * logit, dim=1)
        probs = torch.stack([p[:, 0], p[:, 1], torch.maximum(p[:, 2], p[:, 3])], dim=1)
    torch.testing.assert_close(out_w.probs, probs, atol=1e-5, rtol=1e-5)
    assert torch.equal(out_w.labels, probs.argmax(1))


def test_background_threshold_and_synonym_maxpool(tiny_clip):
    seg = _seg(tiny_clip, prob_thd=0.5, background_index=0)
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.45, 0.45], [0.05, 0.9, 0.05]])  # 3 pixels
    probs = probs.T.reshape(1, 3, 1, 3)
    labels = seg.assign_labels(probs)
    assert labels.flatten().tolist() == [1, 0, 1]  # 0.5 is not below the threshold; 0.45 is
    assert seg.assign_labels(probs, prob_thd=0.0).flatten().tolist() == [1, 1, 1]
    # synonym max-pool
    from ovdense.modeling.heads import max_over_synonyms

    names = torch.tensor([0.1, 0.3, 0.2, 0.4]).view(1, 4, 1, 1)
    pooled = max_over_synonyms(names, torch.tensor([0, 1, 1, 2]), 3)
    assert pooled.flatten().tolist() == pytest.approx([0.1, 0.3, 0.4])
    # threshold without a background class in range
    bad = _seg(tiny_clip, prob_thd=0.5, background_index=5)
    with pytest.raises(ValueError, match="background"):
        bad.assign_labels(probs)


def _sclip_area_rule(seg_logits, area_thd, prob_thd):
    """SCLIP's postprocess_result for one image, verbatim logic (C, H, W)."""
    num_cls = seg_logits.shape[0]
    predictions = F.one_hot(seg_logits.argmax(0), num_cls).to(seg_logits.dtype)
    area_pred = predictions[:, :, 1:].sum((0, 1), keepdim=True)
    area_pred = (area_pred > area_thd * area_pred.sum()).to(seg_logits.dtype)
    seg_logits = seg_logits.clone()
    seg_logits[1:] *= area_pred.transpose(0, -1)
    seg_pred = seg_logits.argmax(0, keepdim=True)
    seg_pred[seg_logits.max(0, keepdim=True)[0] < prob_thd] = 0
    return seg_pred[0]


def test_area_threshold_matches_sclip(tiny_clip):
    torch.manual_seed(4)
    seg = _seg(tiny_clip, prob_thd=0.1, area_thd=0.1, background_index=0)
    for _ in range(5):
        logits = torch.randn(5, 12, 12) * 2
        logits[3] -= 1.5  # a class with a small area
        probs = logits.softmax(0)
        got = seg.assign_labels(probs[None])[0]
        assert torch.equal(got, _sclip_area_rule(probs, 0.1, 0.1))


def test_deterministic_on_cpu(tiny_clip):
    image = torch.rand(1, 3, 37, 61)
    seg = _seg(tiny_clip, short_side=40, window=24, stride=12, strategy="naclip")
    a = seg(image, ["x", "y", "z"])
    b = seg(image, ["x", "y", "z"])
    assert torch.equal(a.probs, b.probs) and torch.equal(a.labels, b.labels)


def test_batch_equals_single_images(tiny_clip):
    torch.manual_seed(5)
    images = torch.rand(3, 3, 40, 40)
    seg = _seg(tiny_clip, short_side=48, window=32, stride=16)
    batch = seg(images, ["x", "y"])
    for i in range(3):
        single = seg(images[i : i + 1], ["x", "y"])
        torch.testing.assert_close(batch.probs[i], single.probs[0], atol=1e-5, rtol=1e-5)


def test_precision_checks(tiny_clip):
    with pytest.raises(ValueError, match="precision"):
        _seg(tiny_clip, precision="fp8")
    seg = _seg(tiny_clip, precision="fp16")
    with pytest.raises(ValueError, match="CUDA"):
        seg(torch.rand(1, 3, 32, 32), ["a"])
    bf = _seg(tiny_clip, precision="bf16", short_side=None, window=None)
    fp = _seg(tiny_clip, short_side=None, window=None)
    img = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(
        bf(img, ["a", "b"]).probs, fp(img, ["a", "b"]).probs, atol=0.1, rtol=0.0
    )
    auto = _seg(tiny_clip, precision="auto", short_side=None, window=None)
    assert torch.equal(auto(img, ["a", "b"]).probs, fp(img, ["a", "b"]).probs)


def test_tiny_image_without_resize_is_a_clear_error(tiny_clip):
    seg = _seg(tiny_clip, short_side=None, window=None)
    with pytest.raises(ValueError, match="smaller than one 8x8 patch"):
        seg(torch.rand(1, 3, 4, 30), ["a"])
    # with the short-side resize the same image is simply scaled up
    up = _seg(tiny_clip, short_side=32, window=None)
    assert up(torch.rand(1, 3, 4, 30), ["a", "b"]).labels.shape == (1, 4, 30)


def test_pamr_refines_the_upsampled_logits(tiny_clip):
    from ovdense.modeling.refiners import PAMR

    torch.manual_seed(6)
    image = torch.rand(1, 3, 30, 44)
    vocab = ["background", "x", "y, z"]
    kw = dict(short_side=40, window=32, stride=16, strategy="naclip")
    plain = _seg(tiny_clip, **kw)
    refined = _seg(tiny_clip, pamr=PAMR(3, (1, 2)), **kw)
    text = plain.encode_text(vocab)
    base = plain.name_logits(plain.encode_image(image), text)
    got = refined.name_logits(refined.encode_image(image), text)
    expected = PAMR(3, (1, 2))(plain.backbone.normalize(image), base)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, base)


@pytest.mark.parametrize("prob_thd", [0.0, 0.3])
def test_streaming_decode_equals_full(tiny_clip, prob_thd):
    """return_probs=False streams names in chunks; labels equal the full softmax path."""
    torch.manual_seed(7)
    image = torch.rand(2, 3, 37, 52)
    names = ["background"] + [f"thing {i}, item {i}" for i in range(40)]
    seg = _seg(tiny_clip, short_side=40, window=32, stride=16, prob_thd=prob_thd, logit_scale=60.0)
    feats, text = seg.encode_image(image), seg.encode_text(names)
    full = seg.decode(feats, text)
    lean = seg.decode(feats, text, return_probs=False, name_chunk=7)
    assert lean.probs is None
    assert torch.equal(full.labels, lean.labels)
    if prob_thd:
        assert (full.labels == 0).any()
