"""CorrCLIP (strategy ``corrclip``, label refiner ``region_vote``, presets): each piece equals a
direct computation of its formula, the whole block equals the official code's construction
(mask class tokens appended to the sequence and run through open_clip's own blocks with a
boolean attention mask), and the presets build and run on CPU with tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_strategies import tiny_strategy_kwargs

from ovdense.config import LazyCall as L
from ovdense.config import instantiate
from ovdense.model_zoo import get_config
from ovdense.modeling.backbones import dense_backbone_for
from ovdense.modeling.clip import load_clip
from ovdense.modeling.refiners import LABEL_REFINERS, RegionVote, region_vote
from ovdense.modeling.strategies import REGIONS, build_strategy
from ovdense.modeling.strategies.corrclip import (
    dbscan_groups,
    merge_regions,
    scope_attention,
    spatial_layer_count,
)
from ovdense.sam.mask_source import MaskSource


# --------------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------------
def _closure_groups(dist, eps):
    """Connected components of the symmetric ``dist <= eps`` graph by transitive closure,
    numbered by first member; points without any neighbour (not even themselves) are -1."""
    near = (dist <= eps) | (dist <= eps).T
    reach = near.clone()
    while True:
        nxt = reach | ((reach.float() @ reach.float()) > 0)
        if torch.equal(nxt, reach):
            break
        reach = nxt
    ids, out = {}, []
    for i in range(dist.shape[0]):
        if not near[i].any():
            out.append(-1)
            continue
        root = int(torch.nonzero(reach[i])[0])
        out.append(ids.setdefault(root, len(ids)))
    return torch.tensor(out)


@pytest.mark.parametrize("eps", [0.05, 0.3, 0.8])
def test_dbscan_groups_are_connected_components(eps):
    pts = F.normalize(torch.randn(12, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    dist = (pts[:, None] - pts[None]).norm(dim=-1)  # symmetric, zero diagonal
    assert torch.equal(dbscan_groups(dist, eps), _closure_groups(dist, eps))
    noisy = dist + torch.eye(12) * (eps + 1)  # isolated points that are not their own neighbour
    noisy[0, 1:] = noisy[1:, 0] = 10.0
    got = dbscan_groups(noisy, eps)
    assert got[0] == -1 and torch.equal(got, _closure_groups(noisy, eps))


def test_merge_regions_formula():
    g = torch.Generator().manual_seed(2)
    regions = torch.randint(0, 6, (40,), generator=g)
    feats = F.normalize(torch.randn(40, 8, generator=g), dim=1)
    for eps in (0.0, 0.5, 1.2):
        got = merge_regions(regions, feats, eps)
        values = torch.unique(regions)
        means = F.normalize(torch.stack([feats[regions == v].mean(0) for v in values]), dim=1)
        means = means[1:]
        sim = means @ means.T
        groups = _closure_groups(sim.max() - sim, eps)
        # same partition: the first region kept, the others joined by group
        first = regions == values[0]
        assert torch.equal(got[first], regions[first])
        for a in range(1, len(values)):
            for b in range(1, len(values)):
                same = bool(got[regions == values[a]][0] == got[regions == values[b]][0])
                noise = groups[a - 1] == -1 or groups[b - 1] == -1
                assert same == (a == b or (not noise and bool(groups[a - 1] == groups[b - 1])))
            if groups[a - 1] == -1:  # DBSCAN's noise keeps its label
                assert got[regions == values[a]].eq(values[a]).all()
            else:
                assert int(got[regions == values[a]][0]) > int(regions.max())
    two = torch.tensor([0, 0, 3, 3])  # fewer than three labels: unchanged
    assert torch.equal(merge_regions(two, F.normalize(torch.randn(4, 3), dim=1)), two)


def test_scope_attention_formula():
    g = torch.Generator().manual_seed(3)
    n = 15
    f = F.normalize(torch.randn(n, 5, generator=g), dim=1)
    sim = f @ f.T
    regions = torch.randint(2, 6, (n,), generator=g)
    regions[:4] = 1  # the smallest label: unsegmented
    got = scope_attention(sim, regions, tau=4.0)
    mean = sim.mean()
    want = torch.zeros(n, n)
    for i in range(n):
        row = []
        for j in range(n):
            same = regions[i] == regions[j] and regions[i] != 1
            loose = (regions[i] == 1 or regions[j] == 1) and sim[i, j] > mean
            row.append(float(torch.exp(4 * sim[i, j])) if (same or loose) else 0.0)
        want[i] = torch.tensor(row) / sum(row)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # a uniform crop (every similarity equal) attends to itself instead of NaN
    flat = scope_attention(torch.ones(4, 4), torch.zeros(4, dtype=torch.long))
    assert torch.equal(flat, torch.eye(4))


def test_spatial_layer_count_is_the_official_rule():
    assert [spatial_layer_count(n) for n in (12, 24, 32, 6)] == [5, 12, 28, 2]
    s = build_strategy("corrclip", **tiny_strategy_kwargs("corrclip"))
    assert list(s.spatial_blocks(12)) == [5, 6, 7, 8, 9]


def test_region_vote_equals_torch_mode():
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 5, (2, 9, 11), generator=g)
    regions = torch.randint(0, 4, (2, 9, 11), generator=g, dtype=torch.int32)
    got = RegionVote()(labels, regions)
    want = labels.clone()
    for b in range(2):
        for v in torch.unique(regions[b])[1:]:
            m = regions[b] == v
            want[b][m] = torch.mode(labels[b][m])[0]
    assert torch.equal(got, want)
    all_voted = region_vote(labels[0], regions[0], skip_first=False)
    m0 = regions[0] == regions[0].min()
    assert all_voted[m0].unique().numel() == 1
    assert LABEL_REFINERS.get("region_vote") is RegionVote


# --------------------------------------------------------------------------------------------
# the whole block against the official construction
# --------------------------------------------------------------------------------------------
def _official_dense(clip, backbone, strategy, images, regions):
    """CorrCLIP's forward as the official code builds it, for each image alone: mask class
    tokens prepended to the sequence, open_clip's own blocks with a boolean attention mask,
    the branches fused after ``ln_post``."""
    v = clip.visual
    blocks = v.transformer.resblocks
    n_blocks = len(blocks)
    spatial_ids = list(strategy.spatial_blocks(n_blocks))
    outs = []
    for i in range(images.shape[0]):
        img = images[i : i + 1]
        x, (gh, gw) = backbone.embed_tokens(img)
        mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
        std = torch.tensor(backbone.std).view(1, 3, 1, 1)
        feats = strategy.vfm(img * std + mean)
        h, w = feats.shape[-2:]
        f = F.normalize(feats.flatten(2)[0].T, dim=-1)
        r = F.interpolate(regions[i][None, None].float(), size=(h, w), mode="nearest")
        r = r.flatten().long()
        merged = merge_regions(r, f, strategy.merge_eps)
        attn = scope_attention(f @ f.T, merged, strategy.tau)
        coarse = F.interpolate(merged.reshape(1, 1, h, w).float(), size=(gh, gw), mode="nearest")
        coarse = coarse.flatten().long()
        members = torch.stack([coarse == lab for lab in torch.unique(coarse)])
        nr = members.shape[0]
        seq = torch.cat([x[:, :1].expand(-1, nr, -1), x], dim=1)
        allow = torch.zeros(seq.shape[1], seq.shape[1], dtype=torch.bool)
        allow[nr:, nr:] = True
        allow[:nr, nr] = True
        allow[:nr, nr + 1 :] = members
        # additive -inf mask (the installed open_clip casts a boolean mask to floats)
        mask = torch.zeros(allow.shape).masked_fill(~allow, float("-inf"))
        spatial = []
        for idx, blk in enumerate(blocks[:-1]):
            seq = blk(seq, attn_mask=mask)
            if idx in spatial_ids:
                spatial.append(seq[:, nr:])
        last = blocks[-1]
        mct = last(seq, attn_mask=mask)[0, :nr]
        c = x.shape[-1]
        a = last.attn

        w_v, b_v = a.in_proj_weight[2 * c :], a.in_proj_bias[2 * c :]
        branches = []
        for t in (seq[:, nr:], torch.stack(spatial).mean(0)):
            val = (last.ln_1(t) @ w_v.T + b_v)[0, 1:].T.reshape(1, c, gh, gw)
            val = F.interpolate(val, size=(h, w), mode="bilinear", align_corners=False)
            branches.append(a.out_proj(attn @ val.flatten(2)[0].T))
        main, spat = branches
        fine = F.interpolate(members[:, None].float().reshape(-1, 1, gh, gw), size=(h, w))
        sem = fine.flatten(1).T @ mct
        fused = v.ln_post(main) + strategy.alpha * v.ln_post(spat) + strategy.beta * v.ln_post(sem)
        dense = F.normalize(fused @ v.proj, dim=-1)
        outs.append(dense.T.reshape(-1, h, w))
    return torch.stack(outs)


@pytest.mark.parametrize("eps", [0.2, 1.5])
@pytest.mark.parametrize("size", [(32, 48), (40, 40)])
def test_strategy_equals_the_official_construction(tiny_clip, eps, size):
    strategy = build_strategy("corrclip", merge_eps=eps, **tiny_strategy_kwargs("corrclip"))
    backbone = dense_backbone_for(tiny_clip, strategy)
    g = torch.Generator().manual_seed(5)
    images = torch.randn(2, 3, *size, generator=g)
    regions = torch.zeros(2, *size, dtype=torch.int32)
    regions[0, : size[0] // 2, : size[1] // 2] = 3
    regions[0, size[0] // 2 :, size[1] // 3 :] = 7
    regions[0, :8, -16:] = 2
    regions[1] = torch.randint(0, 4, (1, 1), generator=g).item()  # a crop with one label
    with torch.no_grad():
        got = backbone(images, {REGIONS: regions}).dense
        want = _official_dense(tiny_clip, backbone, strategy, images, regions)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # without region maps: every patch in the unsegmented region
    with torch.no_grad():
        bare = backbone(images).dense
        zero = _official_dense(tiny_clip, backbone, strategy, images, torch.zeros_like(regions))
    torch.testing.assert_close(bare, zero, rtol=1e-4, atol=1e-4)


def test_strategy_refuses_bad_regions(tiny_clip):
    backbone = dense_backbone_for(
        tiny_clip, build_strategy("corrclip", **tiny_strategy_kwargs("corrclip"))
    )
    with pytest.raises(ValueError, match="region maps of the crops"):
        backbone(torch.randn(1, 3, 32, 32), {REGIONS: torch.zeros(2, 32, 32)})


# --------------------------------------------------------------------------------------------
# segmentor and presets
# --------------------------------------------------------------------------------------------
class BoxMasks(MaskSource):
    """Two fixed boxes (fractions of the image) and a record of the images seen."""

    def __init__(self):
        self.seen = []

    def generate(self, image):
        self.seen.append(image.copy())
        h, w = image.shape[:2]
        m = np.zeros((2, h, w), bool)
        m[0, : h // 2, : w // 2] = True
        m[1, h // 3 :, w // 3 :] = True
        return m

    def settings(self):
        return {"source": "boxes"}


def _tiny_preset(name, tiny_clip_config, source):
    cfg = get_config(name)
    cfg.model.clip = L(load_clip)(config=tiny_clip_config)
    cfg.model.strategy_kwargs = tiny_strategy_kwargs("corrclip")
    cfg.model.mask_source = source
    cfg.model.update(templates="single", short_side=40, window=32, stride=16, precision="fp32")
    return instantiate(cfg.model)


def test_preset_settings_are_the_papers():
    cfg = get_config("seg/corrclip_vitb16")
    m = cfg.model
    assert (m.clip.model_name, m.clip.pretrained) == ("ViT-B-16-quickgelu", "metaclip_fullcc")
    assert m.strategy == "corrclip" and m.strategy_kwargs.vfm == "dino_vitb8"
    assert m.strategy_kwargs.vfm_kwargs.feature == "query_key"
    assert (m.strategy_kwargs.tau, m.strategy_kwargs.alpha, m.strategy_kwargs.beta) == (4, 1, 0.5)
    assert (m.short_side, m.window, m.stride, m.logit_scale) == (336, 336, 112, 40.0)
    assert m.pos_interp == "scale_factor" and m.label_refiner == "region_vote"
    src = m.mask_source
    assert src.name == "sam2" and src.points_per_side == 8 and src.multimask_output is False
    assert (src.pred_iou_thresh, src.stability_score_thresh) == (0.4, 0.4)
    assert get_config("seg/corrclip_vitb16_sam").model.mask_source.name == "sam"
    ev = get_config("eval/corrclip")
    assert ev.class_rule == "proxyclip" and ev.benchmarks["voc21"]["prob_thd"] == 0.2
    assert (
        round(sum(ev.published.values()) / 8, 1) == 50.4
    )  # the README's SAM2_8 row (the preset's 8-point masks)


def test_preset_builds_and_runs_with_tiny_models(tiny_clip_config):
    source = BoxMasks()
    seg = _tiny_preset("seg/corrclip_vitb16", tiny_clip_config, source)
    images = torch.rand(2, 3, 40, 56)
    out = seg(images, ["a", "b", "c"])
    assert out.labels.shape == (2, 40, 56) and len(source.seen) == 2
    # the masks saw the input images (uint8), and the vote made each region one label
    assert np.array_equal(source.seen[0], (images[0].permute(1, 2, 0) * 255).round().byte())
    regions = seg.image_regions(images)
    for b in range(2):
        for v in torch.unique(regions[b])[1:]:
            assert out.labels[b][regions[b] == v].unique().numel() == 1
    # without the vote, the same features give the strategy's raw labels
    seg.label_refiner = None
    raw = seg(images, ["a", "b", "c"]).labels
    assert torch.equal(RegionVote()(raw, regions), out.labels)
    # batches of images of different sizes give the same as one by one
    seg.label_refiner = RegionVote()
    batch = seg.segment_batch([images[0], images[1, :, :36, :44]], ["a", "b", "c"])
    alone = seg(images[1:, :, :36, :44], ["a", "b", "c"])
    assert torch.equal(batch[0].labels, out.labels[:1])
    assert torch.equal(batch[1].labels, alone.labels)


def test_regions_reach_the_strategy_cut_like_the_windows(tiny_clip_config):
    source = BoxMasks()
    seg = _tiny_preset("seg/corrclip_vitb16", tiny_clip_config, source)
    seen = []
    strategy = seg.backbone.strategy
    original = strategy.forward

    def spy(block, x, ctx):
        seen.append(ctx.extras[REGIONS].clone())
        return original(block, x, ctx)

    strategy.forward = spy
    images = torch.rand(1, 3, 40, 56)
    feats = seg.encode_image(images)
    crops = torch.cat(seen)
    regions = seg.image_regions(images)
    resized = F.interpolate(regions[:, None].float(), size=feats.resized_size, mode="nearest")
    want = torch.cat([resized[:, 0, y1:y2, x1:x2] for (y1, y2, x1, x2) in feats.windows])
    assert torch.equal(crops.float(), want) and crops.shape[0] == len(feats.windows)


def test_label_refiner_needs_regions(tiny_clip_config):
    """Without a mask source the region maps come with the images; with neither, encoding
    says what to give."""
    cfg = get_config("seg/corrclip_vitb16")
    cfg.model.clip = L(load_clip)(config=tiny_clip_config)
    cfg.model.strategy_kwargs = tiny_strategy_kwargs("corrclip")
    cfg.model.mask_source = None
    seg = instantiate(cfg.model)
    images = torch.rand(1, 3, 40, 56)
    with pytest.raises(ValueError, match="set mask_source .* or pass the region maps"):
        seg.encode_image(images)
    with pytest.raises(ValueError, match=r"regions must be \[B=1, H=40, W=56\] integer"):
        seg.encode_image(images, regions=torch.zeros(1, 40, 50, dtype=torch.long))


def test_given_regions_equal_the_mask_sources(tiny_clip_config):
    """Region maps passed to encode_image (e.g. masks generated beforehand) give exactly what
    the same maps from a mask source give, in the strategy and in the vote."""
    source = BoxMasks()
    seg = _tiny_preset("seg/corrclip_vitb16", tiny_clip_config, source)
    images = torch.rand(1, 3, 40, 56)
    text = seg.encode_text(["a", "b", "c"])
    regions = seg.image_regions(images)
    with_source = seg.decode(seg.encode_image(images, text), text)
    seg.mask_source = None
    given_feats = seg.encode_image(images, text, regions=regions.long())
    given = seg.decode(given_feats, text)
    assert torch.equal(given_feats.regions, regions.long())
    assert torch.equal(given.labels, with_source.labels)
    for v in torch.unique(regions[0])[1:]:
        assert given.labels[0][regions[0] == v].unique().numel() == 1


def test_sam_variant_needs_its_checkpoint(tiny_clip_config):
    cfg = get_config("seg/corrclip_vitb16_sam")
    cfg.model.clip = L(load_clip)(config=tiny_clip_config)
    cfg.model.strategy_kwargs = tiny_strategy_kwargs("corrclip")
    with pytest.raises(ValueError, match="sam_vit_h_4b8939.pth"):
        instantiate(cfg.model)
