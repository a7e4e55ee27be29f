"""CLIP-DINOiser's two decoding orders (``decode_order``) against a loop-based re-implementation
of the official evaluation (docs/clip_dinoiser_protocol.md), on tiny random models.

The reference below is written from the notes on the official code (``DinoCLIP_Infrencer`` +
mmseg 0.27 ``EncoderDecoder.slide_inference``), not from ovdense's decoding: it pads each crop
with zeros *before* normalisation, runs the head's building blocks on it, and loops over
windows and feature pixels. It shares with ovdense only the feature extractor (checked in
test_clip_dinoiser.py) and the text embeddings.
"""

import pytest
import torch
import torch.nn.functional as F

from ovdense.modeling.refiners import CLIPDINOiserHead
from ovdense.modeling.segmentors import CLIPDINOiserSegmentor
from ovdense.modeling.text import Vocabulary

WIDTH = 64  # tiny ViT width (tests/conftest.py)


def _head(seed: int = 0, bias: float = 0.0, delta: float = 0.99) -> CLIPDINOiserHead:
    torch.manual_seed(seed)
    head = CLIPDINOiserHead(WIDTH, delta=delta)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(0.3 * torch.randn_like(p))
        head.bkg_decoder.bias.fill_(bias)
    return head.eval()


def _seg(clip, head, **kw):
    kw.setdefault("templates", "single")
    kw.setdefault("logit_scale", 100.0)
    return CLIPDINOiserSegmentor(clip, head=head, **kw)


def _blocky(seed: int, h: int, w: int, batch: int = 1) -> torch.Tensor:
    """A random 5 x 7 mosaic at ``h x w`` (regions, so that labels vary)."""
    torch.manual_seed(seed)
    return F.interpolate(torch.rand(batch, 3, 5, 7), size=(h, w), mode="nearest")


def _mmseg_windows(h, w, crop, stride):
    """mmseg 0.27 ``slide_inference``'s crop boxes, written out again."""
    out = []
    for hi in range(max(h - crop + stride - 1, 0) // stride + 1):
        for wi in range(max(w - crop + stride - 1, 0) // stride + 1):
            y1, x1 = hi * stride, wi * stride
            y2, x2 = min(y1 + crop, h), min(x1 + crop, w)
            out.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return out


@torch.no_grad()
def official_reference(seg, image, class_embeds, resized, crop, stride, apply_found):
    """The official order for one image ``[1, 3, H, W]`` in ``[0, 1]``.

    Returns ``(averaged probabilities [C, H, W], labels [H, W])``: the map mmseg's
    ``slide_inference`` returns (before ``inference``'s extra softmax, which does not change the
    argmax) and ``simple_test``'s argmax.
    """
    bb, head = seg.backbone, seg.dinoiser_head
    p = bb.patch_size
    mean = torch.tensor(bb.mean).view(1, 3, 1, 1)
    std = torch.tensor(bb.std).view(1, 3, 1, 1)
    h0, w0 = image.shape[-2:]
    img = F.interpolate(image, size=resized, mode="bilinear", align_corners=False)
    hr, wr = resized
    n_cls = class_embeds.shape[0]
    preds = torch.zeros(1, n_cls, hr, wr)
    count = torch.zeros(1, 1, hr, wr)
    for y1, y2, x1, x2 in _mmseg_windows(hr, wr, crop or max(hr, wr), stride or crop or 1):
        x = img[:, :, y1:y2, x1:x2]
        ch, cw = x.shape[-2:]
        # make_input_divisible: zeros at the bottom / right, before the CLIP normalisation
        x = F.pad(x, (0, (p - cw % p) % p, 0, (p - ch % p) % p), value=0.0)
        x = (x - mean) / std
        tokens, block_feats, (gh, gw) = bb.block_features(x)
        proj = bb.project(tokens)[:, 1:].transpose(1, 2).reshape(1, -1, gh, gw)
        pooled = head.pool(proj, head.correlations(block_feats))
        sal = head.background(block_feats)[0, 0]  # sigmoid at feature resolution
        out = torch.zeros(n_cls, gh, gw)
        for i in range(gh):
            for j in range(gw):
                f = pooled[0, :, i, j]
                cos = class_embeds @ (f / f.norm())
                prob = torch.softmax(100.0 * cos, dim=0)
                if apply_found and prob.max() < head.delta and not sal[i, j] > 0.5:
                    prob[0] = 1.0  # background class; the other classes keep their values
                out[:, i, j] = prob
        # encode_decode: bilinear resize to the crop (not padded) size
        up = F.interpolate(out[None], size=(ch, cw), mode="bilinear", align_corners=False)
        preds += F.pad(up, (x1, wr - x2, y1, hr - y2))
        count[:, :, y1:y2, x1:x2] += 1
    preds = preds / count
    preds = F.interpolate(preds, size=(h0, w0), mode="bilinear", align_corners=False)
    labels = torch.softmax(preds, dim=1).argmax(dim=1)
    return preds[0], labels[0]


CASES = [
    # (input size, short side, window, stride): several windows at a non-native size
    ((40, 56), 44, 32, 16),  # crops of 32 = 4 x 4 patches, 6 windows
    ((37, 50), 44, 36, 20),  # crops of 36 px: padded to 40 (5 x 5 patches), 4 windows
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rule", [True, False])
def test_paper_order_matches_official_reference(tiny_clip, case, rule):
    (h, w), short, window, stride = case
    head = _head(seed=1, bias=0.0, delta=0.99)
    seg = _seg(
        tiny_clip,
        head,
        short_side=short,
        window=window,
        stride=stride,
        background_rule="force" if rule else False,
        background_index=0,  # a benchmark's background class, whatever its name
        window_batch_size=3,
    )
    assert seg.decode_order == "paper"
    vocab = ["sky", "cat", "dog", "tree", "car"]
    text = seg.encode_text(vocab)
    image = _blocky(7, h, w)
    feats = seg.encode_image(image)
    assert len(feats.windows) > 1 and feats.resized_size != (h, w)
    out = seg.decode(feats, text)
    probs, labels = official_reference(
        seg, image, text.embeds, feats.resized_size, window, stride, rule
    )
    torch.testing.assert_close(out.probs[0], probs, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.labels[0], labels)
    assert len(labels.unique()) > 1
    lean = seg.decode(feats, text, return_probs=False, name_chunk=2)
    assert lean.probs is None and torch.equal(lean.labels[0], labels)
    # a probability threshold acts on the averaged maps, streamed or not
    thd = seg.decode(feats, text, prob_thd=0.6)
    assert torch.equal(thd.labels[0], torch.where(probs.amax(dim=0) < 0.6, 0, labels))
    lean = seg.decode(feats, text, prob_thd=0.6, return_probs=False, name_chunk=2)
    assert torch.equal(lean.labels, thd.labels)
    if rule:  # the rule fired somewhere, and not everywhere
        wp = seg.window_probs(feats, text, rule_class=0)
        forced = wp[:, 0] == 1.0
        assert forced.any() and not forced.all()


def test_rule_changes_labels_only_through_class_0(tiny_clip):
    seg = _seg(tiny_clip, _head(seed=1), short_side=44, window=32, stride=16)
    text = seg.encode_text(["sky", "cat", "dog"])
    feats = seg.encode_image(_blocky(8, 40, 56))
    seg.background_rule = False
    off = seg.decode(feats, text)
    seg.background_rule = "force"
    on = seg.decode(feats, text)
    torch.testing.assert_close(on.probs[:, 1:], off.probs[:, 1:])
    assert (on.probs[:, 0] >= off.probs[:, 0] - 1e-6).all()
    changed = on.labels != off.labels
    assert changed.any() and (on.labels[changed] == 0).all()


def test_synonyms_max_at_feature_resolution(tiny_clip):
    """With several names per class the max over names is taken per window, before the rule."""
    seg = _seg(tiny_clip, _head(seed=1), short_side=44, window=32, stride=16)
    torch.manual_seed(9)
    feats = seg.encode_image(torch.rand(1, 3, 40, 56))
    seg.background_rule = False
    syn = seg.encode_text([["sky", "wall"], "cat", ["dog", "puppy"]])
    flat = seg.encode_text(["sky", "wall", "cat", "dog", "puppy"])
    wp_flat = seg.window_probs(feats, flat)
    want = torch.stack(
        [wp_flat[:, 0:2].amax(dim=1), wp_flat[:, 2], wp_flat[:, 3:5].amax(dim=1)], dim=1
    )
    torch.testing.assert_close(seg.window_probs(feats, syn), want)
    torch.testing.assert_close(seg.decode(feats, syn).probs, seg.merge_windows(want, feats))


@pytest.mark.parametrize("rule", [True, False])
def test_orders_differ_with_windows(tiny_clip, rule):
    seg = _seg(
        tiny_clip,
        _head(seed=1),
        short_side=44,
        window=32,
        stride=16,
        background_rule="force" if rule else False,
    )
    text = seg.encode_text(["sky", "cat", "dog", "tree"])
    img = _blocky(7, 40, 56)
    paper = seg.decode(seg.encode_image(img), text)
    seg.decode_order = "ovdense"
    assert seg.pad_to_patch is False
    ours = seg.decode(seg.encode_image(img), text)
    assert not torch.allclose(paper.probs, ours.probs, atol=1e-3)
    assert not torch.equal(paper.labels, ours.labels)


def test_orders_agree_without_upsampling(tiny_clip_factory):
    """One window, patch 1: the feature grid is the output grid, nothing is interpolated, and
    both orders give the same labels (and the same probabilities where the rule is silent)."""
    vision = {"image_size": 8, "layers": 3, "width": WIDTH, "head_width": 16, "patch_size": 1}
    clip = tiny_clip_factory(seed=3, vision_cfg=vision)
    head = _head(seed=2, bias=0.0, delta=0.99)
    vocab = ["background", "cat", "dog", "tree"]
    torch.manual_seed(10)
    img = torch.rand(2, 3, 8, 8)
    outs = {}
    for order in ("paper", "ovdense"):
        seg = _seg(clip, head, short_side=None, window=None, stride=None, decode_order=order)
        feats = seg.encode_image(img)
        assert feats.dense.shape[-2:] == (8, 8)
        outs[order] = seg.decode(feats, seg.encode_text(vocab))
    paper, ours = outs["paper"], outs["ovdense"]
    assert torch.equal(paper.labels, ours.labels)
    forced = (paper.probs[:, 0] == 1.0) & (ours.probs[:, 0] < 1.0)
    assert forced.any() and not forced.all()  # the rule fired on some pixels only
    keep = ~forced[:, None].expand_as(paper.probs)
    torch.testing.assert_close(paper.probs[keep], ours.probs[keep], atol=1e-6, rtol=1e-5)


def test_padding_is_black_pixels(tiny_clip):
    seg = _seg(tiny_clip, _head(), short_side=None, window=None, stride=None)
    bb = seg.backbone
    torch.manual_seed(11)
    raw = torch.rand(2, 3, 13, 17)
    padded = seg.pad_images(bb.normalize(raw))
    want = bb.normalize(F.pad(raw, (0, 7, 0, 3), value=0.0))
    assert padded.shape == (2, 3, 16, 24)
    torch.testing.assert_close(padded, want)
    even = bb.normalize(torch.rand(1, 3, 16, 8))
    assert seg.pad_images(even) is even
    feats = seg.encode_image(raw)
    assert feats.dense.shape[-2:] == (2, 3)  # ceil(13 / 8), ceil(17 / 8)
    seg.decode_order = "ovdense"
    assert seg.encode_image(raw).dense.shape[-2:] == (1, 2)  # floor


def test_decode_order_validated(tiny_clip):
    with pytest.raises(ValueError, match="decode_order"):
        _seg(tiny_clip, _head(), decode_order="official")


def test_rule_background_is_found_by_name(tiny_clip):
    head = _head(seed=1, bias=0.0, delta=0.99)
    auto = _seg(tiny_clip, head)
    assert auto.rule_background(Vocabulary(["cat", "Background", "dog"])) == 1
    assert auto.rule_background(Vocabulary(["cat", "dog"])) is None  # auto: rule off
    with pytest.raises(ValueError, match="background class"):
        _seg(tiny_clip, head, background_rule=True).rule_background(Vocabulary(["cat", "dog"]))
    assert (
        _seg(tiny_clip, head, background_rule="force").rule_background(
            Vocabulary(["sky|wall", "cat"])
        )
        == 0
    )
    assert (
        _seg(tiny_clip, head, background_rule=False).rule_background(
            Vocabulary(["background", "cat"])
        )
        is None
    )
