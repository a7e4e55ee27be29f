"""Contract tests that loop over the registries, not over hand-kept lists.

Every registered last-block strategy runs on both tiny towers (open_clip ViT from
``conftest.py``, EVA02-CLIP from ``tiny_eva.py``): output shape, finite values, unit norm, any
input size, no mixing of the batch, and equality with its formula written out here. Every
registered vision foundation model builder is built tiny and offline: output shape on its grid,
any input size, frozen. A strategy or VFM registered by a test (``test_kk``,
``test_patch_vfm`` below) goes through the same tests without being listed anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from tiny_eva import make_eva
from tiny_strategies import TINY_STRATEGY_KWARGS

from ovdense.modeling.backbones import DenseTowerBackbone, dense_backbone_for
from ovdense.modeling.strategies import (
    STRATEGIES,
    AttentionStrategy,
    TokenContext,
    build_strategy,
    list_strategies,
)
from ovdense.modeling.vfm import (
    VFMS,
    SAMFeatures,
    VisionFoundationModel,
    build_vfm,
    list_vfms,
)
from ovdense.utils.registry import Registry


# --------------------------------------------------------------------------------------------
# what a test registers (as a user would) and must be picked up
# --------------------------------------------------------------------------------------------
class KKAttention(AttentionStrategy):
    """The README's example of a new method: ``softmax(k kᵀ s)``, reduced block."""

    default_keep_residual = False

    def attend(self, q, k, v, ctx):
        return F.scaled_dot_product_attention(k, k, v)


class PatchConvVFM(VisionFoundationModel):
    """A new VFM family: one strided convolution (patch 4, 6 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_size, self.embed_dim = 4, 6
        self.mean, self.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
        self.proj = torch.nn.Conv2d(3, 6, 4, 4)

    def forward(self, images01):
        self._check_images(images01)
        return self.proj(self.pad_to_patches(self.normalize(images01.to(self.dtype))))


def build_patch_vfm(checkpoint=None, pretrained=True) -> VisionFoundationModel:
    return PatchConvVFM()


EXTRA_STRATEGIES = {"test_kk": KKAttention}
EXTRA_VFMS = {"test_patch_vfm": build_patch_vfm}


@contextmanager
def _registered(registry: Registry, items: dict) -> Iterator[None]:
    for name, obj in items.items():
        registry.register(name)(obj)
    try:
        yield
    finally:
        for name in items:
            registry.unregister(name)


@contextmanager
def _with_test_registrations() -> Iterator[None]:
    with _registered(STRATEGIES, EXTRA_STRATEGIES), _registered(VFMS, EXTRA_VFMS):
        yield


# the parameter lists are read from the registries (with the test's own registrations)
with _with_test_registrations():
    STRATEGY_NAMES = list_strategies()
    VFM_NAMES = list_vfms()


@pytest.fixture(autouse=True)
def _test_registrations():
    """The test's registrations exist while its tests run, and only then."""
    with _with_test_registrations():
        yield


# --------------------------------------------------------------------------------------------
# tiny towers and offline arguments
# --------------------------------------------------------------------------------------------
TINY_DINO = {"img_size": 32, "embed_dim": 24, "depth": 2, "num_heads": 2}

# builders of the shipped VFM families, by module: tiny architecture arguments (offline); any
# other builder is called with pretrained=False alone (the VFMS contract)
TINY_VFM_KWARGS = {
    "ovdense.modeling.vfm.timm_vit": {"img_size": 56, "embed_dim": 24, "depth": 2, "num_heads": 2},
    "ovdense.modeling.vfm.sam": {
        "img_size": 64,
        "patch_size": 8,
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "out_chans": 16,
    },
}


def _randomise(module: torch.nn.Module, seed: int, scale: float = 0.3) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))
    return module.eval()


def tiny_vfm(seed: int = 7) -> VisionFoundationModel:
    """A random DINO ViT with CLIP's patch size (8): the VFM grid is CLIP's grid at multiples
    of 8."""
    return _randomise(build_vfm("dino_vitb8", pretrained=False, **TINY_DINO), seed)


# strategies whose defaults need downloaded weights: offline arguments
# (strategies that read earlier blocks or a vocabulary: arguments fitting the tiny towers)
OFFLINE_STRATEGY_KWARGS: dict[str, Callable[[], dict]] = {
    "proxy": lambda: {"vfm": tiny_vfm()},
    **TINY_STRATEGY_KWARGS,
}


def make_strategy(name: str) -> AttentionStrategy:
    return build_strategy(name, **OFFLINE_STRATEGY_KWARGS.get(name, dict)())


@pytest.fixture(scope="module")
def eva():
    return make_eva()


@pytest.fixture(params=["vit", "eva"])
def tower(request, tiny_clip, eva):
    return {"vit": tiny_clip, "eva": eva}[request.param]


# --------------------------------------------------------------------------------------------
# the formulas, written out per head from each tower's own weights
# --------------------------------------------------------------------------------------------
def _omega(grid, n, std=5.0):
    gh, gw = grid
    omega = torch.zeros(n, n)
    for a in range(gh * gw):
        for b in range(gh * gw):
            (ia, ja), (ib, jb) = divmod(a, gw), divmod(b, gw)
            omega[1 + a, 1 + b] = math.exp(-((ia - ib) ** 2 + (ja - jb) ** 2) / (2 * std**2))
    return omega


def _softmax_qk(a, b, s, bias=0.0):
    return torch.softmax(a @ b.transpose(-1, -2) * s + bias, -1)


# name -> (per-head attention weights A(q, k, grid), residual + FFN kept?)
FORMULAS = {
    "vanilla": (lambda q, k, g, s: _softmax_qk(q, k, s), True),
    "maskclip": (lambda q, k, g, s: torch.eye(q.shape[-2]).expand(q.shape[0], -1, -1), True),
    # CAT-Seg: the value path, the CLS token's residual for every token, then the FFN
    "catseg": (lambda q, k, g, s: torch.eye(q.shape[-2]).expand(q.shape[0], -1, -1), "cls"),
    "sclip": (lambda q, k, g, s: _softmax_qk(q, q, s) + _softmax_qk(k, k, s), True),
    "clearclip": (lambda q, k, g, s: _softmax_qk(q, q, s), False),
    "naclip": (lambda q, k, g, s: _softmax_qk(k, k, s, _omega(g, q.shape[-2])), False),
    "test_kk": (lambda q, k, g, s: _softmax_qk(k, k, s), False),
    "proxy": None,  # its own reference below (weights from the VFM, output on its grid)
    # plug-ins reading earlier blocks / the vocabulary: a reference in their own test file
    "resclip": "tests/modeling/test_resclip.py",
    "scclip": "tests/modeling/test_scclip.py",
    "corrclip": "tests/modeling/test_corrclip.py",
}


def _rotate(t, emb):
    """EVA's interleaved RoPE, ``t * cos + rotate_half(t) * sin``, with ``emb = cat(sin, cos)``."""
    sin, cos = emb.chunk(2, -1)
    rot = torch.stack([-t[..., 1::2], t[..., 0::2]], dim=-1).reshape(t.shape)
    return t * cos + rot * sin


class _ViTRef:
    """open_clip ViT: tokens from the backbone's embedding and open_clip's own blocks."""

    def __init__(self, clip, backbone, images):
        v = clip.visual
        x, self.grid = backbone.embed_tokens(images)
        for blk in v.transformer.resblocks[:-1]:
            x = blk(x)
        self.x, self.block = x, v.transformer.resblocks[-1]
        self.heads = self.block.attn.num_heads

    def qkv(self):
        a, c = self.block.attn, self.x.shape[-1]
        qkv = self.block.ln_1(self.x) @ a.in_proj_weight.T + a.in_proj_bias
        return qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]

    def rope(self, q, k):
        return q, k

    def out(self, o):
        return o @ self.block.attn.out_proj.weight.T + self.block.attn.out_proj.bias

    def ffn(self, o, cls_only=False):
        y = (self.x[:, :1] if cls_only else self.x) + o
        return y + self.block.mlp(self.block.ln_2(y))

    def project(self, tokens, clip):
        return clip.visual.ln_post(tokens) @ clip.visual.proj


class _EVARef:
    """EVA02: timm's own embedding and blocks (native size), rotary embedding included."""

    def __init__(self, clip, backbone, images):
        trunk = clip.visual.trunk
        x, self.rope_emb = trunk._pos_embed(trunk.patch_embed(images))
        x = trunk.norm_pre(x)
        for blk in trunk.blocks[:-1]:
            x = blk(x, rope=self.rope_emb)
        self.grid = tuple(trunk.patch_embed.grid_size)
        self.x, self.block = x, trunk.blocks[-1]
        self.heads = self.block.attn.num_heads

    def qkv(self):
        a, h = self.block.attn, self.block.norm1(self.x)
        return (
            h @ a.q_proj.weight.T + a.q_proj.bias,
            h @ a.k_proj.weight.T,
            h @ a.v_proj.weight.T + a.v_proj.bias,
        )

    def rope(self, q, k):
        def rot(t):
            return torch.cat([t[:, :1], _rotate(t[:, 1:], self.rope_emb)], 1)

        return rot(q), rot(k)

    def out(self, o):
        a = self.block.attn
        o = F.layer_norm(o, (o.shape[-1],), a.norm.weight, a.norm.bias, a.norm.eps)
        return o @ a.proj.weight.T + a.proj.bias

    def ffn(self, o, cls_only=False):
        y = (self.x[:, :1] if cls_only else self.x) + o
        return y + self.block.mlp(self.block.norm2(y))

    def project(self, tokens, clip):
        trunk = clip.visual.trunk
        return trunk.head(trunk.norm(tokens))


def _reference_tokens(ref, name):
    """The last block's output tokens by the formula of ``name``, per head with loops."""
    weights, keep = FORMULAS[name]
    q, k, v = ref.qkv()
    c = q.shape[-1]
    hd = c // ref.heads
    outs = []
    for i in range(ref.heads):
        sl = slice(i * hd, (i + 1) * hd)
        qi, ki = ref.rope(q[..., sl], k[..., sl])
        outs.append(weights(qi, ki, ref.grid, hd**-0.5) @ v[..., sl])
    o = ref.out(torch.cat(outs, -1))
    return ref.ffn(o, cls_only=keep == "cls") if keep else o


def _reference_proxy_tokens(ref, strategy, images01):
    """ProxyCLIP: ``A`` from the VFM's features by loops (VFM grid = CLIP grid here), output
    ``[out(v_cls), out(A v)]``, no residual."""
    feats = strategy.vfm(images01)  # [B, Cv, gh, gw]
    assert tuple(feats.shape[-2:]) == tuple(ref.grid)
    _, _, v = ref.qkv()
    b, n = feats.shape[0], feats.shape[-2] * feats.shape[-1]
    f = feats.flatten(2)
    out = []
    for img in range(b):
        s = torch.zeros(n, n)
        for i in range(n):
            for j in range(n):
                fi, fj = f[img, :, i], f[img, :, j]
                s[i, j] = fi @ fj / (fi.norm() * fj.norm())
        s = (s - strategy.beta * s.mean()) * strategy.gamma
        a = torch.where(s >= 0, s.exp(), torch.zeros(()))
        a = a / a.sum(-1, keepdim=True)
        out.append(torch.cat([v[img, :1], a @ v[img, 1:]], 0))
    return ref.out(torch.stack(out))


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------
def test_registered_strategies_are_picked_up_and_named():
    assert "test_kk" in STRATEGY_NAMES and "test_kk" in list_strategies()
    assert {"vanilla", "maskclip", "sclip", "clearclip", "naclip", "proxy"} <= set(STRATEGY_NAMES)
    for name in STRATEGY_NAMES:
        cls = STRATEGIES.get(name)
        assert issubclass(cls, AttentionStrategy) and cls.name == name
        assert make_strategy(name).name == name


def test_every_shipped_strategy_has_a_formula_here():
    shipped = [n for n in STRATEGY_NAMES if STRATEGIES.get(n).__module__.startswith("ovdense.")]
    missing = sorted(set(shipped) - set(FORMULAS))
    assert not missing, f"write the formula of {missing} in FORMULAS (test_registries.py)"


@pytest.mark.parametrize("name", STRATEGY_NAMES)
@pytest.mark.parametrize("size", [(32, 32), (40, 56), (33, 17), (8, 8)])
def test_strategy_contract_any_size(tower, name, size):
    strategy = make_strategy(name)
    backbone = dense_backbone_for(tower, strategy)
    assert isinstance(backbone, DenseTowerBackbone)
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        feats = backbone(images)
        tokens, grid, _ = backbone.forward_tokens(images)
    clip_grid = (size[0] // backbone.patch_size, size[1] // backbone.patch_size)
    gh, gw = strategy.output_grid(clip_grid, size)
    assert grid == (gh, gw)
    assert tokens.shape == (2, 1 + gh * gw, backbone.width)
    assert feats.dense.shape == (2, backbone.embed_dim, gh, gw)
    assert feats.global_embed.shape == (2, backbone.embed_dim)
    assert feats.stride == size[0] // gh
    assert torch.isfinite(feats.dense).all() and torch.isfinite(feats.global_embed).all()
    torch.testing.assert_close(feats.dense.norm(dim=1), torch.ones(2, gh, gw))
    # images of a batch never mix
    with torch.no_grad():
        alone = backbone(images[1:])
    torch.testing.assert_close(alone.dense, feats.dense[1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_strategy_equals_its_formula(tower, name):
    if name not in FORMULAS:
        pytest.skip(f"no formula written for the strategy {name!r}")
    if isinstance(FORMULAS[name], str):
        pytest.skip(f"the formula of {name!r} is tested in {FORMULAS[name]}")
    strategy = make_strategy(name)
    backbone = dense_backbone_for(tower, strategy)
    is_eva = type(backbone).__name__ == "DenseEVABackbone"
    sizes = [(32, 32)] if is_eva else [(32, 32), (40, 56)]  # EVA: timm's own blocks, native
    for size in sizes:
        images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            got, grid, _ = backbone.forward_tokens(images)
            dense = backbone(images).dense
            ref = (_EVARef if is_eva else _ViTRef)(tower, backbone, images)
            if FORMULAS[name] is None:
                mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
                std = torch.tensor(backbone.std).view(1, 3, 1, 1)
                expected = _reference_proxy_tokens(ref, strategy, images * std + mean)
            else:
                expected = _reference_tokens(ref, name)
            projected = ref.project(expected[:, 1:], tower)
        assert grid == ref.grid
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        want = F.normalize(projected, dim=-1).transpose(1, 2).reshape(dense.shape)
        torch.testing.assert_close(dense, want, rtol=1e-4, atol=1e-4)


def test_strategy_keep_residual_default_matches_formula():
    for name, formula in FORMULAS.items():
        if isinstance(formula, tuple) and name in STRATEGY_NAMES:
            assert make_strategy(name).keep_residual is bool(formula[1]), name


# --------------------------------------------------------------------------------------------
# vision foundation models
# --------------------------------------------------------------------------------------------
def _build_tiny_vfm(name: str) -> VisionFoundationModel:
    builder = VFMS.get(name)
    vfm = build_vfm(name, pretrained=False, **TINY_VFM_KWARGS.get(builder.__module__, {}))
    return _randomise(vfm, seed=len(name), scale=0.2)


def test_registered_vfms_are_picked_up_and_named():
    assert "test_patch_vfm" in VFM_NAMES and "test_patch_vfm" in list_vfms()
    assert {"dino_vitb8", "dinov2_vitb14_reg", "sam_vit_b"} <= set(VFM_NAMES)
    for name in VFM_NAMES:
        assert VFMS.get(name).name == name


@pytest.mark.parametrize("name", VFM_NAMES)
def test_vfm_contract_any_size(name):
    vfm = _build_tiny_vfm(name)
    assert isinstance(vfm, VisionFoundationModel)
    assert not vfm.training and not any(p.requires_grad for p in vfm.parameters())
    assert vfm.patch_size >= 1 and vfm.embed_dim >= 1
    g = torch.Generator().manual_seed(5)
    for h, w in [(1, 1), (7, 9), (33, 17), (16, 64), (56, 56)]:
        images01 = torch.rand(2, 3, h, w, generator=g)
        with torch.no_grad():
            out = vfm(images01)
            alone = vfm(images01[1:])
        grid = vfm.output_grid(h, w)
        assert out.shape == (2, vfm.embed_dim, *grid)
        assert torch.isfinite(out).all()
        # the stride: ViT wrappers pad to whole patches; SAM resizes the long side first
        hh, ww = vfm.input_size(h, w) if isinstance(vfm, SAMFeatures) else (h, w)
        assert grid == (math.ceil(hh / vfm.patch_size), math.ceil(ww / vfm.patch_size))
        torch.testing.assert_close(alone, out[1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", VFM_NAMES)
def test_vfm_drives_the_proxy_strategy(tiny_clip, name):
    """Any registered VFM can stand behind ProxyCLIP's strategy: dense map on its grid."""
    vfm = _build_tiny_vfm(name)
    backbone = dense_backbone_for(tiny_clip, build_strategy("proxy", vfm=vfm))
    images = torch.randn(1, 3, 40, 24)
    with torch.no_grad():
        feats = backbone(images)
    assert feats.dense.shape == (1, backbone.embed_dim, *vfm.output_grid(40, 24))
    assert torch.isfinite(feats.dense).all()


# --------------------------------------------------------------------------------------------
# the registry itself
# --------------------------------------------------------------------------------------------
def test_register_sets_the_name_once():
    reg: Registry = Registry("widget")

    @reg.register("a")
    class A:
        pass

    @reg.register()
    def make_b():
        return 1

    assert A.name == "a" and make_b.name == "make_b" and reg.get("a") is A
    reg.register("a_alias")(A)  # an alias keeps its first name
    assert A.name == "a" and reg.get("a_alias") is A
    with pytest.raises(KeyError, match="already registered"):
        reg.register("a")(A)

    class Named:
        name = "other"

    with pytest.raises(ValueError, match="leave the attribute out"):
        reg.register("named")(Named)
    assert "named" not in reg

    class Child(A):  # inherits A's name, gets its own
        pass

    reg.register("child")(Child)
    assert Child.name == "child" and A.name == "a"
    assert reg.unregister("child") is Child and "child" not in reg
    with pytest.raises(KeyError, match="Did you mean 'a'"):
        reg.unregister("aa")


def test_context_records_the_grid_a_strategy_outputs_on(tiny_clip):
    """``output_grid`` tells in advance what ``forward`` writes into ``ctx.grid``."""
    for name in STRATEGY_NAMES:
        strategy = make_strategy(name)
        backbone = dense_backbone_for(tiny_clip, strategy)
        images = torch.randn(1, 3, 44, 20)
        x, grid = backbone.embed_tokens(images)
        ctx = TokenContext(grid=grid, images=images)
        with torch.no_grad():
            x, _ = backbone.forward_trunk(x, ctx)
            strategy(backbone.last_block(x, ctx), x, ctx)
        assert ctx.grid == strategy.output_grid(grid, (44, 20)), name


def test_old_import_paths_re_export_the_same_objects():
    import ovdense.modeling.backbones as backbones
    from ovdense.modeling import layers, strategies, vfm
    from ovdense.modeling.backbones import attention, clip_vit, pos_embed, proxy
    from ovdense.modeling.backbones import vfm as old_vfm

    for name in attention.__all__:
        if hasattr(strategies, name):
            assert getattr(attention, name) is getattr(strategies, name)
    assert attention.NACLIPAttention.name == "naclip"
    assert proxy.ProxyAttention is strategies.ProxyAttention
    assert proxy.proxy_affinity is strategies.proxy_affinity
    for name in old_vfm.__all__:
        if hasattr(vfm, name):
            assert getattr(old_vfm, name) is getattr(vfm, name)
    assert pos_embed.interpolate_pos_embed is layers.interpolate_pos_embed
    assert clip_vit.dense_backbone_for is backbones.dense_backbone_for
    for name in backbones.__all__:
        assert getattr(backbones, name) is not None
