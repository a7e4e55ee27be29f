"""ProxyCLIP's proxy attention against its formula written out with loops (tiny random models)."""

import math

import pytest
import timm
import torch

from ovdense.config import LazyCall as L
from ovdense.config import instantiate
from ovdense.model_zoo import get_config
from ovdense.modeling.backbones import (
    STRATEGIES,
    DenseCLIPBackbone,
    ProxyAttention,
    TokenContext,
    build_strategy,
)
from ovdense.modeling.backbones.proxy import proxy_affinity
from ovdense.modeling.backbones.vfm import DINOFeatures, VisionFoundationModel
from ovdense.modeling.clip import load_clip
from ovdense.modeling.segmentors import TrainingFreeSegmentor

TINY_VIT = {"img_size": 32, "embed_dim": 24, "depth": 2, "num_heads": 2}


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _vision_cfg(patch):
    return {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": patch}


def _tiny_dino(seed=0, patch_name="vit_base_patch8_224.dino"):
    model = timm.create_model(patch_name, pretrained=False, **TINY_VIT)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return DINOFeatures(model=model).eval()


def _tokens_before_last_block(clip, images):
    backbone = DenseCLIPBackbone(clip)
    x, grid = backbone.embed_tokens(images)
    for blk in clip.visual.transformer.resblocks[:-1]:
        x = blk(x)  # open_clip's own block (batch first)
    return x, grid


def _bilinear(grid_vals, out_h, out_w):
    """``F.interpolate(..., mode="bilinear", align_corners=False)`` written out: ``[gh, gw, C]``."""
    gh, gw, c = grid_vals.shape
    out = grid_vals.new_zeros(out_h, out_w, c)
    for oy in range(out_h):
        sy = max((oy + 0.5) * gh / out_h - 0.5, 0.0)
        y0 = int(math.floor(sy))
        y1, ly = min(y0 + 1, gh - 1), sy - y0
        for ox in range(out_w):
            sx = max((ox + 0.5) * gw / out_w - 0.5, 0.0)
            x0 = int(math.floor(sx))
            x1, lx = min(x0 + 1, gw - 1), sx - x0
            out[oy, ox] = (
                (1 - ly) * (1 - lx) * grid_vals[y0, x0]
                + (1 - ly) * lx * grid_vals[y0, x1]
                + ly * (1 - lx) * grid_vals[y1, x0]
                + ly * lx * grid_vals[y1, x1]
            )
    return out


def _reference_weights(feats, beta, gamma, mean_over="image"):
    """S = cos(F_i, F_j); S <- (S - beta mean(S)) gamma; S < 0 -> -inf; softmax: loops."""
    c, n = feats.shape
    s = feats.new_zeros(n, n)
    for i in range(n):
        for j in range(n):
            s[i, j] = feats[:, i] @ feats[:, j] / (feats[:, i].norm() * feats[:, j].norm())
    if mean_over == "image":
        s = (s - beta * s.mean()) * gamma
    else:
        s = (s - beta * s.mean(dim=1, keepdim=True)) * gamma
    a = s.new_zeros(n, n)
    for i in range(n):
        e = [math.exp(s[i, j].item()) if s[i, j] >= 0 else 0.0 for j in range(n)]
        total = sum(e)
        for j in range(n):
            a[i, j] = e[j] / total
    return a


def _reference_proxy(clip, vfm, images, beta, gamma, mean_over="image"):
    """The last block of ProxyCLIP written out for one image: ``[1 + h * w, C]``, ``(h, w)``."""
    x, (gh, gw) = _tokens_before_last_block(clip, images)
    last = clip.visual.transformer.resblocks[-1]
    c = x.shape[-1]
    heads = last.attn.num_heads
    hd = c // heads
    w_in, b_in = last.attn.in_proj_weight, last.attn.in_proj_bias
    v = last.ln_1(x)[0] @ w_in[2 * c :].T + b_in[2 * c :]  # [1 + gh * gw, C]
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073), dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711), dtype=images.dtype).view(1, 3, 1, 1)
    feats = vfm(images * std + mean)[0]  # [Cv, h, w]
    h, w = feats.shape[-2:]
    a = _reference_weights(feats.reshape(feats.shape[0], h * w), beta, gamma, mean_over)
    v_res = _bilinear(v[1:].reshape(gh, gw, c), h, w).reshape(h * w, c)
    o = v_res.new_zeros(h * w, c)
    for head in range(heads):
        sl = slice(head * hd, (head + 1) * hd)
        for i in range(h * w):
            o[i, sl] = sum(a[i, j] * v_res[j, sl] for j in range(h * w))
    out_proj = last.attn.out_proj
    tokens = torch.cat([v[:1], o], dim=0) @ out_proj.weight.T + out_proj.bias
    return tokens, (h, w)


@pytest.mark.parametrize(
    "clip_patch, hw",
    [
        (8, (32, 32)),  # same patch size: v is not resized
        (8, (40, 24)),
        (16, (32, 32)),  # CLIP 2x2 -> DINO 4x4: bilinear resize of v
        (16, (48, 32)),
        (8, (36, 28)),  # not multiples: CLIP drops pixels (4x3), DINO pads (5x4)
    ],
)
def test_proxy_attention_equals_its_formula(tiny_clip_factory, clip_patch, hw):
    clip = tiny_clip_factory(seed=3, vision_cfg=_vision_cfg(clip_patch)).double()
    vfm = _tiny_dino(seed=1).double()
    images = torch.randn(1, 3, *hw, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    strategy = ProxyAttention(vfm=vfm, beta=1.2, gamma=3.0)
    x, grid = _tokens_before_last_block(clip, images)
    ctx = TokenContext(grid=grid, images=images)
    got = strategy(clip.visual.transformer.resblocks[-1], x, ctx)
    expected, vfm_grid = _reference_proxy(clip, vfm, images, 1.2, 3.0)
    assert ctx.grid == vfm_grid == (math.ceil(hw[0] / 8), math.ceil(hw[1] / 8))
    assert got.shape == (1, 1 + vfm_grid[0] * vfm_grid[1], 64)
    torch.testing.assert_close(got[0], expected, atol=1e-10, rtol=1e-10)


def test_row_mean_variant_and_other_beta_gamma(tiny_clip_factory):
    clip = tiny_clip_factory(seed=4, vision_cfg=_vision_cfg(16)).double()
    vfm = _tiny_dino(seed=5).double()
    images = torch.randn(1, 3, 32, 24, dtype=torch.float64)
    strategy = ProxyAttention(vfm=vfm, beta=0.8, gamma=2.0, mean_over="row")
    x, grid = _tokens_before_last_block(clip, images)
    got = strategy(clip.visual.transformer.resblocks[-1], x, TokenContext(grid, images))
    expected, _ = _reference_proxy(clip, vfm, images, 0.8, 2.0, mean_over="row")
    torch.testing.assert_close(got[0], expected, atol=1e-10, rtol=1e-10)


def test_affinity_rows_and_uniform_image_fallback():
    feats = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    a = proxy_affinity(feats)
    assert a.shape == (2, 15, 15)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 15, dtype=torch.float64))
    for b in range(2):  # per image, never mixing the batch
        ref = _reference_weights(feats[b].reshape(8, 15), 1.2, 3.0)
        torch.testing.assert_close(a[b], ref, atol=1e-12, rtol=1e-12)
    # identical features: mean(S) = 1 > 1 / beta, every entry < 0 -> ProxyCLIP gives NaN;
    # we keep the unmasked softmax (uniform here)
    same = torch.ones(1, 4, 2, 2)
    torch.testing.assert_close(proxy_affinity(same), torch.full((1, 4, 4), 0.25))
    with pytest.raises(ValueError, match="mean_over"):
        proxy_affinity(feats, mean_over="col")


class _SpyVFM(VisionFoundationModel):
    """Records its input; features = a fixed random map on an 8-pixel grid."""

    def __init__(self):
        super().__init__()
        self.patch_size, self.embed_dim = 8, 6
        self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        self.proj = torch.nn.Conv2d(3, 6, 8, 8)
        self.seen = []

    def forward(self, images01):
        self.seen.append(images01.clone())
        return self.proj(self.pad_to_patches(self.normalize(images01)))


def test_vfm_sees_the_unnormalised_crop_and_dense_map_is_on_its_grid(tiny_clip):
    spy = _SpyVFM()
    backbone = DenseCLIPBackbone(tiny_clip, strategy=ProxyAttention(vfm=spy))
    images01 = torch.rand(2, 3, 40, 29)
    out = backbone(backbone.normalize(images01))
    torch.testing.assert_close(spy.seen[-1], images01, atol=1e-6, rtol=1e-6)
    assert out.dense.shape == (2, 32, 5, 4) and out.stride == 8
    torch.testing.assert_close(out.dense.norm(dim=1), torch.ones(2, 5, 4))
    # a caller may pass the CLIP normalisation through ctx.extras
    strategy = ProxyAttention(vfm=spy)
    ctx = TokenContext((1, 1), images=torch.zeros(1, 3, 8, 8), extras={"clip_mean": (0.5,) * 3})
    torch.testing.assert_close(strategy.images01(ctx), torch.full((1, 3, 8, 8), 0.5))
    with pytest.raises(RuntimeError, match="ctx.images"):
        strategy.images01(TokenContext((1, 1)))


def test_segmentor_end_to_end_deterministic_and_moves(tiny_clip_factory):
    clip = tiny_clip_factory(seed=6)
    seg = TrainingFreeSegmentor(
        clip,
        strategy=ProxyAttention(vfm=_tiny_dino(seed=7)),
        templates="single",
        short_side=40,
        window=32,
        stride=16,
    )
    image = torch.rand(1, 3, 30, 45, generator=torch.Generator().manual_seed(8))
    names = ["cat", "dog", "sky"]
    out1 = seg(image, names)
    out2 = seg(image, names)
    assert out1.labels.shape == (1, 30, 45) and out1.probs.shape == (1, 3, 30, 45)
    assert torch.equal(out1.labels, out2.labels) and torch.equal(out1.probs, out2.probs)
    assert torch.isfinite(out1.probs).all()
    feats32 = seg.encode_image(image).dense
    assert feats32.shape[-2:] == (4, 4)  # 32-pixel windows on DINO's 8-pixel grid

    seg.to("cpu").to(torch.float64)
    assert seg.backbone.strategy.vfm.dtype == torch.float64
    feats64 = seg.encode_image(image).dense
    torch.testing.assert_close(feats64.float(), feats32, atol=1e-4, rtol=1e-4)
    assert seg(image, names).labels.shape == (1, 30, 45)


def test_registered_and_built_by_name_with_vfm_kwargs():
    assert "proxy" in STRATEGIES
    strategy = build_strategy(
        "proxy", vfm="dino_vitb16", vfm_kwargs={"pretrained": False, **TINY_VIT}, beta=1.0
    )
    assert isinstance(strategy, ProxyAttention) and strategy.vfm.patch_size == 16
    assert strategy.beta == 1.0 and strategy.keep_residual is False
    with pytest.raises(ValueError, match="vfm_kwargs are only used"):
        ProxyAttention(vfm=_tiny_dino(), vfm_kwargs={"pretrained": False})
    with pytest.raises(TypeError, match="DINOFeatures"):
        ProxyAttention(vfm=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="mean_over"):
        ProxyAttention(vfm=_tiny_dino(), mean_over="col")


def test_presets_build_and_run_with_tiny_models(tiny_clip_config):
    cfg = get_config("seg/proxyclip_vitb16")
    assert cfg.model.strategy == "proxy" and cfg.model.strategy_kwargs.vfm == "dino_vitb8"
    assert (cfg.model.short_side, cfg.model.window, cfg.model.stride) == (336, 336, 112)
    assert cfg.model.logit_scale == 40.0
    cfg.model.clip = L(load_clip)(config=tiny_clip_config)
    cfg.model.strategy_kwargs.vfm_kwargs = {"pretrained": False, **TINY_VIT}
    cfg.model.update(templates="single", short_side=40, window=32, stride=16, precision="fp32")
    seg = instantiate(cfg.model)
    assert seg(torch.rand(1, 3, 40, 50), ["a", "b"]).labels.shape == (1, 40, 50)

    assert get_config("seg/proxyclip_vitb16_dinov2").model.strategy_kwargs.vfm == (
        "dinov2_vitb14_reg"
    )
    sam = get_config("seg/proxyclip_vitb16_sam")
    assert sam.model.strategy_kwargs.vfm == "sam_vit_b"
    sam.model.clip = L(load_clip)(config=tiny_clip_config)
    with pytest.raises(ValueError, match="vfm_kwargs.checkpoint"):
        instantiate(sam.model)
    ev = get_config("eval/proxyclip")
    assert ev.class_rule == "proxyclip" and ev.benchmarks["voc21"]["prob_thd"] == 0.2


def test_proxyclip_preset_uses_dino_output_tokens_as_the_official_code():
    """ProxyCLIP's code takes DINO's ``get_intermediate_layers(x)[0]`` (the last block's output
    after the final norm), not the keys: docs/parity_mmseg.md measured the difference."""
    from ovdense.modeling.vfm import build_vfm

    cfg = get_config("proxyclip")
    assert cfg.model.strategy_kwargs.vfm_kwargs.feature == "tokens"
    assert get_config("seg/proxyclip_vitb16_dinov2").model.strategy_kwargs.vfm_kwargs.feature == (
        "tokens"
    )
    vfm = build_vfm("dino_vitb8", pretrained=False, feature="tokens", **TINY_VIT)
    assert vfm.feature == "tokens"
