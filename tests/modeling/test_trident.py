"""Trident (splice-then-segment): each piece against its formula written out (tiny random CLIP,
DINO and SAM), the segmentor's splice mode against a direct computation, the presets on CPU."""

import math
from dataclasses import replace

import pytest
import timm
import torch
import torch.nn.functional as F

from ovdense.config import LazyCall as L
from ovdense.config import instantiate
from ovdense.evaluation.runner import eval_preset, resolve_eval_config
from ovdense.model_zoo import get_config
from ovdense.modeling.backbones import DenseCLIPBackbone
from ovdense.modeling.clip import load_clip
from ovdense.modeling.refiners import (
    AGGREGATORS,
    SAMAffinityAggregator,
    build_aggregator,
    trident_affinity,
)
from ovdense.modeling.segmentors import Segmentor, TrainingFreeSegmentor
from ovdense.modeling.segmentors.base import splice_ratio, splice_size
from ovdense.modeling.strategies import ProxyAttention, proxy_affinity
from ovdense.modeling.text import Vocabulary
from ovdense.modeling.vfm import DINOFeatures
from ovdense.modeling.vfm.sam import SAMFeatures, sam_image_encoder
from ovdense.sam import tiny_sam

TINY_SAM = {
    "img_size": 64,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "global_attn_indexes": (1,),
    "window_size": 4,
}
TINY_VIT = {"img_size": 32, "embed_dim": 24, "depth": 2, "num_heads": 2}


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _tiny_sam_features(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    enc = sam_image_encoder("vit_b", **TINY_SAM)
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in enc.named_parameters():  # the relative position tables start at zero
        if "rel_pos" in name:
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return SAMFeatures(enc).to(dtype).eval()


def _tiny_dino(seed=0):
    model = timm.create_model("vit_base_patch8_224.dino", pretrained=False, **TINY_VIT)
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return DINOFeatures(model=model, feature="tokens").eval()


# -- the formulas -----------------------------------------------------------------------------
def _reference_trident_weights(attn, v, cos_fac, refine_neg_cos):
    """get_sam_sim of Trident written out with loops for one image: attn [H, n, n], v [H, n, d]."""
    heads, n, _ = attn.shape
    sim = torch.zeros(heads, n, n, dtype=torch.float64)
    for h in range(heads):
        for i in range(n):
            for j in range(n):
                a, b = v[h, i].double(), v[h, j].double()
                sim[h, i, j] = a @ b / (a.norm() * b.norm())
    out = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        t = cos_fac * sim[:, i, :].mean().item()
        if not refine_neg_cos and t < 0:
            t = 0.6
        t = min(t, 0.9)
        row = [
            sum(attn[h, i, j].item() if sim[h, i, j] > t else 0.0 for h in range(heads)) / heads
            for j in range(n)
        ]
        total = sum(row)
        out[i] = torch.tensor([r / total for r in row], dtype=torch.float64)
    return out


@pytest.mark.parametrize(
    "cos_fac, refine_neg_cos", [(1.2, True), (3.0, False), (-2.0, False), (30.0, True)]
)
def test_trident_affinity_equals_its_formula(cos_fac, refine_neg_cos):
    g = torch.Generator().manual_seed(0)
    attn = torch.softmax(torch.randn(2, 3, 12, 12, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(2, 3, 12, 5, generator=g, dtype=torch.float64)
    got = trident_affinity((attn, v), cos_fac, refine_neg_cos, head_chunk=2)
    assert got.shape == (2, 12, 12) and got.dtype == torch.float32
    for b in range(2):
        ref = _reference_trident_weights(attn[b], v[b], cos_fac, refine_neg_cos)
        torch.testing.assert_close(got[b].double(), ref, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        trident_affinity((attn, v[:, :2]))


def test_proxy_batch_mean_is_one_mean_over_all_windows():
    # seeded: the two means differ in which pairs they keep only for some draws (the softmax
    # does not see a shift of a whole row, only the threshold's cut)
    feats = torch.randn(3, 6, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = proxy_affinity(feats, beta=1.2, gamma=3.0, mean_over="batch")
    f = F.normalize(feats.flatten(2), dim=1)
    s = torch.stack([f[b].T @ f[b] for b in range(3)])
    mean = sum(s[b, i, j] for b in range(3) for i in range(6) for j in range(6)) / (3 * 36)
    shifted = (s - 1.2 * mean) * 3.0
    ref = torch.softmax(shifted.masked_fill(shifted < 0, float("-inf")), dim=-1)
    torch.testing.assert_close(got, ref)
    assert not torch.allclose(got, proxy_affinity(feats, mean_over="image"))


def test_sam_last_attention_is_the_encoders_last_attention():
    """On an image filling SAM's input (no crop), the weights times the values, through the
    block's output projection, equal segment-anything's own attention of the last block."""
    sam = _tiny_sam_features()
    enc = sam.image_encoder
    images = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    att = sam.last_attention(images)
    assert att.grid == att.padded_grid == (8, 8)
    x = enc.patch_embed(sam.prepare(images)) + enc.pos_embed
    x = enc.blocks[0](x)
    last = enc.blocks[-1]
    expected = last.attn(last.norm1(x))  # [1, 8, 8, C]
    o = att.weights() @ att.values()  # [1, heads, 64, hd]
    got = last.attn.proj(o.permute(0, 2, 1, 3).reshape(1, 8, 8, -1))
    torch.testing.assert_close(got, expected)
    # a wide image: the rows and columns of the cells covering it, not renormalised
    wide = torch.rand(1, 3, 36, 64, dtype=torch.float64)
    for rounding, grid in (("ceil", (5, 8)), ("floor", (4, 8))):
        att = sam.last_attention(wide, rounding)
        full = replace(att, grid=att.padded_grid).weights()  # uncropped
        assert att.grid == grid and att.weights().shape == (1, 2, grid[0] * 8, grid[0] * 8)
        keep = torch.arange(64).view(8, 8)[: grid[0], : grid[1]].flatten()
        torch.testing.assert_close(att.weights(), full[:, :, keep][:, :, :, keep])
        torch.testing.assert_close(att.weights(slice(1, 2)), att.weights()[:, 1:2])
        torch.testing.assert_close(att.values(), att.v[:, :, keep])
    with pytest.raises(ValueError, match="rounding"):
        sam.last_attention(wide, "round")


def test_aggregator_equals_a_direct_computation():
    sam = _tiny_sam_features(seed=3)
    agg = SAMAffinityAggregator(sam, cos_fac=1.2, refine_neg_cos=False, rounding="ceil")
    g = torch.Generator().manual_seed(4)
    tokens = torch.randn(1, 7, 5, 6, generator=g, dtype=torch.float64)
    images = torch.rand(1, 3, 40, 50, generator=g, dtype=torch.float64)
    out = agg(tokens, images)
    att = sam.last_attention(images, "ceil")
    gh, gw = att.grid  # 50 -> 64 wide: 40 -> 51 high, ceil(51 / 8) = 7
    assert (gh, gw) == (7, 8) and out.shape == (1, 7, gh, gw)
    w = _reference_trident_weights(att.weights()[0], att.values()[0], 1.2, False)
    x = F.interpolate(tokens, size=(gh, gw), mode="bilinear", align_corners=False)
    x = x.flatten(2)[0]  # [C, n]
    ref = torch.stack([sum(w[m, j] * x[:, j] for j in range(gh * gw)) for m in range(gh * gw)])
    torch.testing.assert_close(out[0].flatten(1).T, ref, atol=1e-6, rtol=1e-6)

    # two columns: each half of the image and of the map on its own, side by side
    agg2 = SAMAffinityAggregator(sam, columns=2, rounding="ceil")
    both = agg2(tokens, images)
    left = agg2.mix(tokens[..., :3], images[..., :25])
    right = agg2.mix(tokens[..., 3:], images[..., 25:])
    torch.testing.assert_close(both, torch.cat([left, right], dim=-1))


def test_aggregator_registry_and_errors():
    assert "sam_affinity" in AGGREGATORS
    agg = build_aggregator("sam_affinity", pretrained=False, sam_kwargs=TINY_SAM, cos_fac=0.0)
    assert isinstance(agg, SAMAffinityAggregator) and agg.cos_fac == 0.0
    assert agg.rounding == "floor" and agg.sam.patch_size == 8
    assert build_aggregator(None) is None
    with pytest.raises(ValueError, match="model.aggregator_kwargs.checkpoint=.*sam_vit_b_01ec64"):
        SAMAffinityAggregator("vit_b")
    with pytest.raises(ValueError, match="sam must be one of"):
        SAMAffinityAggregator("vit_x", pretrained=False)
    with pytest.raises(TypeError, match="SAMFeatures"):
        SAMAffinityAggregator(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="need an aggregator name"):
        build_aggregator(agg, cos_fac=1.0)


# -- the splice mode ---------------------------------------------------------------------------
def test_splice_size_and_ratio_follow_trident():
    # Trident's preprocess_image: 448 x 597 -> long side 608, 456 -> 464
    assert splice_size(448, 597, 16, 336) == (464, 608)
    assert splice_size(336, 500, 16, 336) == (352, 512)
    assert splice_size(464, 608, 16, 336) == (464, 608)  # already whole patches
    assert splice_size(300, 301, 16, 336) == (336, 336)  # at least one window
    assert splice_ratio((21, 21), (21, 21)) == 1  # DINO B/16 on CLIP B/16
    assert splice_ratio((42, 42), (21, 21)) == 2  # DINO B/8
    assert splice_ratio((21, 21), (24, 24)) == 1  # DINO B/16 on CLIP H/14: resized


class _Recorder(torch.nn.Module):
    """An aggregator returning its input (doubled in width), recording what it saw."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, tokens, images):
        self.seen.append((tokens.clone(), images.clone()))
        return torch.cat([tokens, tokens.flip(-1)], dim=-1)


def test_splice_mode_equals_a_direct_computation(tiny_clip_factory):
    clip = tiny_clip_factory(seed=5)  # patch 8
    dino = _tiny_dino(seed=6)
    rec = _Recorder()
    seg = TrainingFreeSegmentor(
        clip,
        strategy=ProxyAttention(vfm=dino, mean_over="batch"),
        templates="single",
        short_side=36,
        window=32,
        stride=16,
        aggregator=rec,
    )
    image = torch.rand(1, 3, 36, 53, generator=torch.Generator().manual_seed(7))
    feats = seg.encode_image(image)
    # short side 36 -> 36 x 53 -> whole patches: long side 56, 38 -> 40
    hr, wr = splice_size(36, 53, 8, 32)
    assert (hr, wr) == (40, 56)
    x = seg.backbone.normalize(image)
    x = F.interpolate(x, size=(hr, wr), mode="bilinear", align_corners=False)
    boxes = [(y, y + 32, x0, x0 + 32) for y in (0, 8) for x0 in (0, 16, 24)]
    crops = torch.cat([x[:, :, a:b, c:d] for a, b, c, d in boxes])
    # every window of the image in one call: the proxy's batch mean covers all of them
    tokens, grid, _ = seg.backbone.forward_tokens(crops)
    assert grid == (4, 4)
    maps = tokens[:, 1:].transpose(1, 2).reshape(len(boxes), -1, 4, 4)
    acc = torch.zeros(1, maps.shape[1], 5, 7)
    count = torch.zeros(1, 1, 5, 7)
    for k, (a, b, c, d) in enumerate(boxes):
        acc[0, :, a // 8 : b // 8, c // 8 : d // 8] += maps[k]
        count[0, 0, a // 8 : b // 8, c // 8 : d // 8] += 1
    spliced = acc / count
    got_tokens, got_images = rec.seen[-1]
    torch.testing.assert_close(got_tokens, spliced, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_images, image)
    mixed = torch.cat([spliced, spliced.flip(-1)], dim=-1)
    dense = F.normalize(seg.backbone.project(mixed.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), dim=1)
    torch.testing.assert_close(feats.dense, dense, atol=1e-5, rtol=1e-5)
    assert feats.windows == [(0, 36, 0, 53)] and feats.resized_size == feats.image_size == (36, 53)
    # the scores are resized once, from the aggregated grid to the input size
    vocab = Vocabulary(["a", "b", "c"])
    text = seg.encode_text(vocab)
    logits = seg.name_logits(feats, text)
    cos = torch.einsum("bdhw,nd->bnhw", dense, text.embeds)
    ref = F.interpolate(cos, size=(36, 53), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    # forward, segment_batch and a batch of two agree
    out = seg(image, vocab)
    assert out.labels.shape == (1, 36, 53)
    batch = seg.segment_batch([image[0], image[0]], vocab)
    assert all(torch.equal(b.labels, out.labels) for b in batch)
    two = seg(torch.cat([image, image]), vocab)
    torch.testing.assert_close(two.probs[1:], out.probs, atol=1e-5, rtol=1e-5)


def test_splice_mode_refuses_what_does_not_fit(tiny_clip):
    agg = _Recorder()
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        TrainingFreeSegmentor(tiny_clip, window=30, stride=16, aggregator=agg)
    with pytest.raises(ValueError, match="a refiner .* or an aggregator"):
        TrainingFreeSegmentor(
            tiny_clip, window=32, stride=16, aggregator=agg, refiner=torch.nn.Identity()
        )
    base = TrainingFreeSegmentor(tiny_clip, window=32, stride=16)
    for option in ({"global_view": True}, {"crop_resize": 32}):
        with pytest.raises(ValueError, match="global_view and crop_resize"):
            Segmentor(
                backbone=base.backbone,
                text_encoder=base.text_encoder,
                window=32,
                stride=16,
                aggregator=agg,
                **option,
            )
    seg = TrainingFreeSegmentor(tiny_clip, window=32, stride=16, aggregator=agg)
    with pytest.raises(RuntimeError, match="needs an aggregator"):
        seg.aggregator = None
        seg.encode_spliced(torch.rand(1, 3, 32, 32))


def test_trident_end_to_end_with_tiny_models_is_finite(tiny_clip_factory):
    """The real pieces together (DINO-guided windows, SAM affinity) on a tiny scale."""
    clip = tiny_clip_factory(seed=8)
    seg = TrainingFreeSegmentor(
        clip,
        strategy=ProxyAttention(vfm=_tiny_dino(seed=9), mean_over="batch"),
        templates="single",
        short_side=40,
        window=32,
        stride=16,
        aggregator=SAMAffinityAggregator(_tiny_sam_features(seed=10, dtype=torch.float32)),
    )
    image = torch.rand(1, 3, 45, 60, generator=torch.Generator().manual_seed(11))
    feats = seg.encode_image(image)
    # SAM: 45 x 60 -> 48 x 64 inside its 64 x 64 input: whole 8-pixel cells 6 x 8
    assert feats.dense.shape == (1, 32, 6, 8)
    torch.testing.assert_close(feats.dense.norm(dim=1), torch.ones(1, 6, 8))
    out = seg(image, ["cat", "dog", "sky"])
    assert out.probs.shape == (1, 3, 45, 60) and torch.isfinite(out.probs).all()


# -- presets ----------------------------------------------------------------------------------
def test_presets_build_and_run_on_cpu(tiny_clip_config):
    cfg = get_config("trident")
    m = cfg.model
    assert m.aggregator == "sam_affinity" and m.strategy == "proxy"
    assert m.strategy_kwargs.vfm == "dino_vitb16" and m.strategy_kwargs.mean_over == "batch"
    assert (m.short_side, m.window, m.stride, m.logit_scale) == (448, 336, 224, 40.0)
    assert m.aggregator_kwargs.cos_fac == 1.2 and m.aggregator_kwargs.rounding == "floor"
    assert m.post_refiner.coarse_thresh == 0.2 and m.post_refiner.iou_thresh == 0.8
    with pytest.raises(ValueError, match="model.aggregator_kwargs.checkpoint"):
        build_aggregator(m.aggregator, **m.aggregator_kwargs)
    m.clip = L(load_clip)(config=tiny_clip_config)
    m.strategy_kwargs.vfm_kwargs = {"pretrained": False, "feature": "tokens", **TINY_VIT}
    m.aggregator_kwargs.update(pretrained=False, sam_kwargs=TINY_SAM)
    m.post_refiner = L(tiny_sam_refiner)()
    m.update(templates="single", short_side=40, window=32, stride=16, precision="fp32")
    seg = instantiate(m)
    out = seg(torch.rand(1, 3, 40, 50), ["background", "a", "b"])
    assert out.labels.shape == (1, 40, 50) and torch.isfinite(out.probs).all()


def tiny_sam_refiner():
    from ovdense.sam.refine import SAMRefiner

    return SAMRefiner(sam=tiny_sam(0, img_size=64), iou_thresh=-1e9)


def test_eval_preset_carries_the_official_per_benchmark_settings():
    city = resolve_eval_config("trident", "cityscapes")
    assert city.class_rule == "proxyclip" and city.model.short_side == 688
    agg = city.model.aggregator_kwargs
    assert (agg.cos_fac, agg.refine_neg_cos, agg.columns) == (3.0, False, 2)
    assert city.model.post_refiner.coarse_thresh == 0.10
    voc20 = resolve_eval_config("trident", "voc20")
    assert (voc20.model.short_side, voc20.model.stride) == (336, 112)
    assert voc20.model.aggregator_kwargs.cos_fac == 0.0
    voc21 = resolve_eval_config("trident", "voc21", overrides=["model.post_refiner.checkpoint=x"])
    assert voc21.model.prob_thd == 0.2 and voc21.model.post_refiner.checkpoint == "x"
    ade = resolve_eval_config("trident", "ade20k_150")
    assert ade.model.short_side == 576 and ade.model.aggregator_kwargs.refine_neg_cos is False
    assert ade.model.post_refiner.coarse_thresh == 0.05
    preset = eval_preset("trident")
    assert preset.published["voc21"] == 67.1 and preset.published["ade20k_150"] == 21.9
    mean = sum(preset.published.values()) / len(preset.published)
    assert math.isclose(round(mean, 1), 45.8) and set(preset.published) == set(preset.suite)


def test_backbone_tokens_feed_the_splice(tiny_clip):
    """The splice reads the tokens the backbone's forward projects (one home for both)."""
    bb = DenseCLIPBackbone(tiny_clip)
    x = torch.randn(2, 3, 32, 40)
    tokens, grid, _ = bb.forward_tokens(x)
    dense = bb.project(tokens)[:, 1:].transpose(1, 2).reshape(2, -1, *grid)
    torch.testing.assert_close(F.normalize(dense, dim=1), bb(x).dense)
