"""The labels-only decode in strips (issue #16 item 2): any strip size gives the same labels
bit for bit, in both decode orders, with every rule it supports; and they equal the full
(probabilities) path's labels on tiny models."""

import pytest
import torch
import torch.nn.functional as F

from ovdense.modeling.refiners import CLIPDINOiserHead
from ovdense.modeling.segmentors import CLIPDINOiserSegmentor, sliding_windows, stitch_windows
from ovdense.modeling.segmentors.tiled import (
    StripMaps,
    linear_taps,
    resize_rows,
    strip_bounds,
)
from ovdense.modeling.text import ClassEmbeddings

WIDTH = 64  # tiny ViT width (tests/conftest.py)
VOCAB = ["background", "sky", "cat, kitty", "dog", "tree, bush, shrub", "car", "road"]


@pytest.mark.parametrize(
    "hw,size", [((7, 7), (32, 32)), ((14, 21), (100, 77)), ((40, 56), (37, 52)), ((9, 9), (9, 9))]
)
def test_resize_rows_is_interpolate_up_to_rounding(hw, size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw)
    ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    rows, cols = linear_taps(hw[0], size[0]), linear_taps(hw[1], size[1])
    full = resize_rows(x, rows, cols)
    torch.testing.assert_close(full, ref, atol=2e-6, rtol=1e-6)
    # any cut into rows gives the same bits
    cut = torch.cat([resize_rows(x, rows.rows(r, r + 3), cols) for r in range(0, size[0], 3)], 2)
    assert torch.equal(cut, full)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize(
    "resized,image,window,stride",
    [
        ((40, 56), (37, 52), 32, 16),
        ((64, 48), (200, 150), 32, 24),
        ((40, 40), (40, 40), None, None),
    ],
)
def test_strip_maps_equal_stitched_maps(batch, resized, image, window, stride):
    torch.manual_seed(1)
    windows = sliding_windows(*resized, window, stride)
    maps = torch.randn(len(windows) * batch, 4, 5, 5)
    ref = stitch_windows(maps, windows, batch, resized, image)
    strip = StripMaps(windows, batch, (5, 5), resized, image, torch.device("cpu"))
    whole = strip(maps, 0, image[0])
    torch.testing.assert_close(whole, ref, atol=2e-6, rtol=1e-6)
    for tile in (1, image[1] + 1, 5 * image[1] - 3):
        cut = torch.cat([strip(maps, r0, r1) for r0, r1 in strip_bounds(*image, tile)], 2)
        assert torch.equal(cut, whole)


def _head(seed=0, bias=0.0):
    torch.manual_seed(seed)
    head = CLIPDINOiserHead(WIDTH, delta=0.99)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(0.3 * torch.randn_like(p))
        head.bkg_decoder.bias.fill_(bias)
    return head.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # these decodes are many tiny ops: on a loaded machine extra threads only wait
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _area_thd(labels: torch.Tensor, bg: int = 0) -> float:
    """An ``area_thd`` that suppresses the smallest foreground class of ``labels``."""
    counts = torch.stack([torch.bincount(lab.flatten(), minlength=len(VOCAB)) for lab in labels])
    counts[:, bg] = 0
    frac = counts / counts.sum(dim=1, keepdim=True)
    return float(frac[frac > 0].min()) + 1e-3


@pytest.fixture(scope="module")
def setup(tiny_clip):
    seg = CLIPDINOiserSegmentor(
        tiny_clip,
        head=_head(),
        templates="single",
        logit_scale=60.0,
        short_side=40,
        window=32,
        stride=16,
        window_batch_size=3,
        background_index=0,
    )
    torch.manual_seed(3)
    image = F.interpolate(torch.rand(2, 3, 5, 7), size=(45, 61), mode="nearest")
    image = (image + 0.05 * torch.rand_like(image)).clamp(0, 1)
    text = seg.encode_text(VOCAB)
    # tiny random text towers put every pixel in one class: use image features at random
    # places as the names' embeddings instead, so that labels vary
    dense = seg.encode_image(image).dense
    d = dense.permute(1, 0, 2, 3).flatten(1)
    picks = d[:, torch.randperm(d.shape[1])[: text.embeds.shape[0]]].T
    embeds = F.normalize(picks + 0.01 * torch.randn_like(picks), dim=-1)
    feats = {}
    for order in ("ovdense", "paper"):  # the paper order pads crops
        seg.decode_order = order
        feats[order] = seg.encode_image(image)
    seg.decode_order = "ovdense"
    text = ClassEmbeddings(embeds, text.name_to_class, text.vocabulary)
    seg.background_rule = False  # the area rule counts the argmax before the saliency rule
    area = _area_thd(seg.decode(feats["ovdense"], text).labels)
    seg.background_rule = None
    return seg, feats, text, image, area


@pytest.mark.parametrize("order", ["ovdense", "paper"])
@pytest.mark.parametrize("prob_thd", [0.0, 0.5])
@pytest.mark.parametrize("area_rule", [False, True])
@pytest.mark.parametrize("rule", [False, "force"])
def test_tiled_labels_equal_untiled_and_full(setup, order, prob_thd, area_rule, rule):
    seg, all_feats, text, image, area = setup
    seg.decode_order = order
    seg.background_rule = rule
    seg.area_thd = area if area_rule else None
    try:
        feats = all_feats[order]
        full = seg.decode(feats, text, prob_thd=prob_thd)
        untiled = seg.decode(feats, text, prob_thd, return_probs=False, tile_pixels=10**9)
        assert untiled.probs is None
        for tile, chunk in [(1, 1), (61 * 4 + 7, 3)]:
            tiled = seg.decode(
                feats, text, prob_thd, return_probs=False, name_chunk=chunk, tile_pixels=tile
            )
            assert torch.equal(tiled.labels, untiled.labels), (tile, chunk)
        # the full path's resize is F.interpolate: equal up to float rounding, which changes
        # no label on these maps
        assert torch.equal(untiled.labels, full.labels)
        assert len(full.labels.unique()) > 1
    finally:
        seg.decode_order, seg.background_rule, seg.area_thd = "ovdense", None, None


def test_rules_change_labels_in_the_tiled_path(setup):
    """The options are not no-ops on the test image (so the equality above means something)."""
    seg, all_feats, text, image, area = setup
    feats = all_feats["ovdense"]
    plain = seg.decode(feats, text, return_probs=False, tile_pixels=100).labels
    thd = seg.decode(feats, text, 0.5, return_probs=False, tile_pixels=100).labels
    assert not torch.equal(plain, thd)
    seg.background_rule = False  # the saliency rule could hide the area rule's changes
    try:
        unruled = seg.decode(feats, text, return_probs=False, tile_pixels=100).labels
        seg.area_thd = area
        suppressed = seg.decode(feats, text, return_probs=False, tile_pixels=100).labels
    finally:
        seg.area_thd, seg.background_rule = None, None
    assert not torch.equal(unruled, suppressed)
    seg.background_rule = "force"
    try:
        ruled = seg.decode(feats, text, return_probs=False, tile_pixels=100).labels
    finally:
        seg.background_rule = None
    assert not torch.equal(unruled, ruled)


def test_pamr_falls_back_to_the_full_path(setup):
    from ovdense.modeling.refiners import PAMR

    seg, all_feats, text, image, area = setup
    seg.pamr = PAMR(3, (1, 2))
    try:
        feats = seg.encode_image(image)
        full = seg.decode(feats, text)
        lean = seg.decode(feats, text, return_probs=False, tile_pixels=7)
    finally:
        seg.pamr = None
    assert lean.probs is None and torch.equal(lean.labels, full.labels)


def test_bad_tile_pixels(setup):
    seg, all_feats, text, image, area = setup
    feats = all_feats["ovdense"]
    with pytest.raises(ValueError, match="tile_pixels"):
        seg.decode(feats, text, return_probs=False, tile_pixels=0)
