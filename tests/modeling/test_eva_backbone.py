"""DenseEVABackbone (EVA02-CLIP towers), the EVA-CLIP checkpoint converter and CLIPSelf on EVA,
against timm's own forward and explicit re-computations.

The tiny random EVA02-CLIP comes from ``tests/tiny_eva.py``.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from tiny_eva import MODEL_NAME, TIMM_NAME, make_eva

from ovdense.modeling.backbones import (
    DenseCLIPBackbone,
    DenseEVABackbone,
    DenseTowerBackbone,
    build_clip_backbone,
    dense_backbone_for,
)
from ovdense.modeling.clip import load_clip
from ovdense.modeling.convert import (
    checkpoint_layout,
    convert_eva_clip_state_dict,
    load_eva_clip_weights,
)

STRATEGIES = ["vanilla", "maskclip", "sclip", "clearclip", "naclip"]


@pytest.fixture(scope="module")
def eva():
    return make_eva()


# --------------------------------------------------------------------------------------------
# independent references
# --------------------------------------------------------------------------------------------


def _rotate(t, emb):
    """EVA-CLIP's ``t * cos + rotate_half_interleaved(t) * sin``, written out."""
    sin, cos = emb.chunk(2, -1)
    rot = torch.stack([-t[..., 1::2], t[..., 0::2]], dim=-1).reshape(t.shape)
    return t * cos + rot * sin


def _eva_clip_rope(head_dim, grid, ref=(4, 4), theta=10000.0):
    """EVA-CLIP's VisionRotaryEmbeddingFast (pt_seq_len=ref, ft_seq_len=grid), generalised to a
    rectangular grid: ``[gh * gw, 2 * head_dim]`` as ``cat(sin, cos)``."""
    half = head_dim // 2
    freqs = 1.0 / theta ** (torch.arange(0, half, 2)[: half // 2].double() / half)
    axes = []
    for g, r in zip(grid, ref, strict=True):
        t = torch.arange(g).double() / g * r
        f = torch.outer(t, freqs).repeat_interleave(2, dim=-1)  # [g, half]
        axes.append(f)
    fh = axes[0][:, None, :].expand(grid[0], grid[1], half)
    fw = axes[1][None, :, :].expand(grid[0], grid[1], half)
    f = torch.cat([fh, fw], dim=-1).reshape(grid[0] * grid[1], head_dim)
    return torch.cat([f.sin(), f.cos()], dim=-1).float()


def _timm_tokens_before_last(trunk, images):
    """timm's own embedding and first blocks (native grid)."""
    x = trunk.patch_embed(images)
    x, rope = trunk._pos_embed(x)
    x = trunk.norm_pre(x)
    for blk in trunk.blocks[:-1]:
        x = blk(x, rope=rope)
    return x, rope


def _reference_last_block(block, x, rope, strategy, grid, std=5.0):
    """Per-head loops from the block's weights (docs/methods.md#eva02-towers with EVA's q/k/v, RoPE,
    sub-LN)."""
    a = block.attn
    heads = a.num_heads
    h = block.norm1(x)
    q = h @ a.q_proj.weight.T + a.q_proj.bias
    k = h @ a.k_proj.weight.T
    v = h @ a.v_proj.weight.T + a.v_proj.bias
    c = x.shape[-1]
    hd = c // heads
    s = hd**-0.5
    n = x.shape[1]
    gh, gw = grid
    omega = torch.zeros(n, n)
    for i in range(gh * gw):
        for j in range(gh * gw):
            (ia, ja), (ib, jb) = divmod(i, gw), divmod(j, gw)
            omega[1 + i, 1 + j] = math.exp(-((ia - ib) ** 2 + (ja - jb) ** 2) / (2 * std**2))
    outs = []
    for i in range(heads):
        sl = slice(i * hd, (i + 1) * hd)
        qi, ki, vi = q[..., sl], k[..., sl], v[..., sl]
        qi = torch.cat([qi[:, :1], _rotate(qi[:, 1:], rope)], 1)
        ki = torch.cat([ki[:, :1], _rotate(ki[:, 1:], rope)], 1)
        if strategy == "vanilla":
            w = torch.softmax(qi @ ki.transpose(1, 2) * s, -1)
        elif strategy == "maskclip":
            w = torch.eye(n).expand(x.shape[0], n, n)
        elif strategy == "sclip":
            w = torch.softmax(qi @ qi.transpose(1, 2) * s, -1) + torch.softmax(
                ki @ ki.transpose(1, 2) * s, -1
            )
        elif strategy == "clearclip":
            w = torch.softmax(qi @ qi.transpose(1, 2) * s, -1)
        else:  # naclip
            w = torch.softmax(ki @ ki.transpose(1, 2) * s + omega, -1)
        outs.append(w @ vi)
    o = (
        F.layer_norm(torch.cat(outs, -1), (c,), a.norm.weight, a.norm.bias, a.norm.eps)
        @ a.proj.weight.T
        + a.proj.bias
    )
    if strategy in ("clearclip", "naclip"):
        return o
    y = x + o
    return y + block.mlp(block.norm2(y))


def _project(trunk, tokens):
    return trunk.head(trunk.norm(tokens))


# --------------------------------------------------------------------------------------------
# backbone
# --------------------------------------------------------------------------------------------


def test_dispatch_and_attributes(eva):
    bb = dense_backbone_for(eva, "naclip")
    # siblings over one base: EVA does not subclass the ViT backbone
    assert type(bb) is DenseEVABackbone and isinstance(bb, DenseTowerBackbone)
    assert not isinstance(bb, DenseCLIPBackbone)
    assert bb.patch_size == 8 and bb.embed_dim == 32 and bb.width == 64 and bb.num_blocks == 3
    assert bb.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert type(build_clip_backbone(model=eva, strategy="sclip")) is DenseEVABackbone
    # the teacher of CLIPSelf is built from the tower alone
    assert type(dense_backbone_for(eva.visual)) is DenseEVABackbone
    with pytest.raises(TypeError, match="dense_backbone_for"):
        DenseCLIPBackbone(eva)


def test_vanilla_reproduces_timm_and_encode_image(eva):
    torch.manual_seed(1)
    images = torch.randn(3, 3, 32, 32)
    bb = dense_backbone_for(eva, "vanilla")
    trunk = eva.visual.trunk
    with torch.no_grad():
        feats = bb(images)
        tokens = trunk.forward_features(images)
        pooled = eva.encode_image(images)
    # forward_features ends with the trunk's norm: only the head is left
    ref = F.normalize(trunk.head(tokens[:, 1:]), dim=-1).transpose(1, 2).reshape(3, 32, 4, 4)
    torch.testing.assert_close(feats.dense, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(feats.global_embed, F.normalize(pooled, dim=-1), atol=1e-5, rtol=0)


def test_rope_matches_eva_clip_formula(eva):
    bb = dense_backbone_for(eva)
    for grid in [(4, 4), (5, 7), (3, 2)]:
        torch.testing.assert_close(bb.rope(grid, torch.device("cpu")), _eva_clip_rope(16, grid))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_equals_formula(eva, strategy):
    torch.manual_seed(2)
    images = torch.randn(2, 3, 32, 32)
    bb = dense_backbone_for(eva, strategy)
    trunk = eva.visual.trunk
    with torch.no_grad():
        got, grid, _ = bb.forward_tokens(images)
        x, _ = _timm_tokens_before_last(trunk, images)
        rope = _eva_clip_rope(16, (4, 4))
        ref = _reference_last_block(trunk.blocks[-1], x, rope, strategy, (4, 4))
        dense = bb(images).dense
    assert grid == (4, 4)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    expected = F.normalize(_project(trunk, ref[:, 1:]), dim=-1).transpose(1, 2).reshape(2, -1, 4, 4)
    torch.testing.assert_close(dense, expected, rtol=1e-4, atol=1e-4)


def test_non_native_grid_equals_timm_dynamic_size(eva, monkeypatch):
    """At 6x7 patches our vanilla tokens equal timm's own ``dynamic_img_size`` forward (its RoPE
    for the grid). timm resamples the absolute position embedding with ``antialias=True``
    (PIL-style cubic, different values even when upsampling); ovdense's ``pos_interp="size"``
    is plain ``F.interpolate`` bicubic (as the dense-CLIP repos), so timm's call is made
    antialias-free here to compare everything else exactly."""
    import timm.models.eva as timm_eva

    resample = timm_eva.resample_abs_pos_embed

    def no_aa(*args, **kwargs):
        return resample(*args, **{**kwargs, "antialias": False})

    monkeypatch.setattr(timm_eva, "resample_abs_pos_embed", no_aa)
    trunk = eva.visual.trunk
    dyn = timm.create_model(TIMM_NAME, num_classes=32, dynamic_img_size=True).eval()
    dyn.load_state_dict(trunk.state_dict())
    images = torch.randn(2, 3, 48, 59)  # 3 trailing columns do not fill a patch
    bb = dense_backbone_for(eva, "vanilla", pos_interp="size")
    with torch.no_grad():
        feats = bb(images)
        ref = dyn.forward_features(images[..., :56])
    expected = F.normalize(dyn.head(ref[:, 1:]), dim=-1)  # forward_features applies norm
    assert feats.dense.shape == (2, 32, 6, 7)
    torch.testing.assert_close(
        feats.dense, expected.transpose(1, 2).reshape(2, 32, 6, 7), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("size", [(40, 56), (33, 17), (8, 8), (100, 30)])
def test_any_input_size(eva, strategy, size):
    bb = dense_backbone_for(eva, strategy, pos_interp="scale_factor")
    with torch.no_grad():
        f = bb(torch.randn(1, 3, *size))
    gh, gw = size[0] // 8, size[1] // 8
    assert f.dense.shape == (1, 32, gh, gw)
    assert torch.isfinite(f.dense).all()
    torch.testing.assert_close(f.dense.norm(dim=1), torch.ones(1, gh, gw))


def test_intermediates_and_small_image(eva):
    images = torch.randn(1, 3, 32, 32)
    bb = dense_backbone_for(eva, "maskclip", out_indices=(-3, 1))
    trunk = eva.visual.trunk
    with torch.no_grad():
        f = bb(images)
        x = trunk.norm_pre(trunk._pos_embed(trunk.patch_embed(images))[0])
        rope = trunk.rope.get_embed()
        x0 = trunk.blocks[0](x, rope=rope)
        x1 = trunk.blocks[1](x0, rope=rope)
    assert set(f.intermediates) == {"block0", "block1"}
    torch.testing.assert_close(
        f.intermediates["block1"], x1[:, 1:].transpose(1, 2).reshape(1, 64, 4, 4)
    )
    with pytest.raises(ValueError, match="smaller than one 8x8 patch"):
        bb(torch.randn(1, 3, 5, 40))


def test_proxy_strategy_runs_on_eva(eva):
    """ProxyCLIP with a stand-in VFM: output equals out_proj(A v) with EVA's v (no RoPE on v)."""
    from ovdense.modeling.backbones.proxy import ProxyAttention, proxy_affinity
    from ovdense.modeling.backbones.vfm import VisionFoundationModel

    class Stub(VisionFoundationModel):
        patch_size = 8
        embed_dim = 5

        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Conv2d(3, 5, 8, 8)

        def forward(self, images):
            return self.proj(images)

    try:
        vfm = Stub()
    except TypeError:  # pragma: no cover - abstract signature differs
        pytest.skip("VisionFoundationModel cannot be stubbed here")
    strat = ProxyAttention(vfm=vfm)
    bb = dense_backbone_for(eva, strat)
    images = torch.randn(1, 3, 32, 32)
    trunk = eva.visual.trunk
    with torch.no_grad():
        got, grid, _ = bb.forward_tokens(images)
        x, _ = _timm_tokens_before_last(trunk, images)
        blk = trunk.blocks[-1]
        v = blk.attn.v_proj(blk.norm1(x)).reshape(1, 17, 4, 16).transpose(1, 2)
        imgs01 = images * torch.tensor(bb.std).view(1, 3, 1, 1) + torch.tensor(bb.mean).view(
            1, 3, 1, 1
        )
        attn = proxy_affinity(vfm(imgs01))
        o = torch.cat([v[:, :, :1], attn.unsqueeze(1) @ v[:, :, 1:]], 2)
        o = o.transpose(1, 2).reshape(1, 17, 64)
        ref = blk.attn.proj(blk.attn.norm(o))
    assert grid == (4, 4)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# EVA-CLIP checkpoints
# --------------------------------------------------------------------------------------------

# open_clip / timm name -> EVA-CLIP name (the inverse of the converter, written independently)
_TO_EVA_CLIP = [
    ("attn.q_proj.bias", "attn.q_bias"),
    ("attn.v_proj.bias", "attn.v_bias"),
    ("attn.norm.", "attn.inner_attn_ln."),
    ("mlp.fc1_g.", "mlp.w1."),
    ("mlp.fc1_x.", "mlp.w2."),
    ("mlp.norm.", "mlp.ffn_ln."),
    ("mlp.fc2.", "mlp.w3."),
]


def to_eva_clip(clip, visual_prefix="visual.", with_text=True):
    """An EVA-CLIP-named state dict of ``clip``, as CLIPSelf / EVA-CLIP write it: RoPE buffers
    included (per tower and per attention), the text tower under ``text.``."""
    out = {}
    for k, v in clip.state_dict().items():
        if k.startswith("visual.trunk."):
            k = k[len("visual.trunk.") :]
            for a, b in _TO_EVA_CLIP:
                k = k.replace(a, b)
            out[visual_prefix + k] = v.clone()
        elif with_text:
            out[k] = v.clone()
    out[visual_prefix + "rope.freqs_cos"] = torch.randn(16, 16)
    out[visual_prefix + "rope.freqs_sin"] = torch.randn(16, 16)
    out[visual_prefix + "blocks.0.attn.rope.freqs_cos"] = torch.randn(16, 16)
    return out


def _same_outputs(a, b, text=True):
    torch.manual_seed(5)
    images = torch.randn(2, 3, 32, 32)
    tokens = torch.randint(0, 49408, (2, 77))
    with torch.no_grad():
        torch.testing.assert_close(a.encode_image(images), b.encode_image(images))
        if text:
            torch.testing.assert_close(a.encode_text(tokens), b.encode_text(tokens))
        da = dense_backbone_for(a, "naclip")(images).dense
        db = dense_backbone_for(b, "naclip")(images).dense
    torch.testing.assert_close(da, db)


def test_eva_clip_checkpoint_converts_and_loads(eva, tmp_path):
    sd = to_eva_clip(eva)
    assert "visual.blocks.0.attn.q_bias" in sd and "visual.blocks.0.mlp.ffn_ln.weight" in sd
    assert checkpoint_layout(sd) == "eva_clip"
    converted = convert_eva_clip_state_dict(sd, eva)
    assert set(converted) == set(eva.state_dict())
    path = tmp_path / "eva_clip.pt"
    # CLIPSelf-style file: nested under state_dict, DDP prefix, extra entries
    torch.save({"epoch": 6, "state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    loaded = load_clip(MODEL_NAME, checkpoint=path)
    _same_outputs(eva, loaded)


def test_visual_only_checkpoint(eva, tmp_path):
    path = tmp_path / "visual.pt"
    torch.save(to_eva_clip(eva, visual_prefix="", with_text=False), path)
    with pytest.raises(ValueError, match="only an image tower.*--text-from") as info:
        load_clip(MODEL_NAME, checkpoint=path)
    assert "does not match this architecture" not in str(info.value)  # not a mismatch
    other = make_eva(seed=7)
    text_before = {k: v.clone() for k, v in other.state_dict().items() if k.startswith("text.")}
    load_eva_clip_weights(other, path)
    _same_outputs(eva, other, text=False)
    for k, v in other.state_dict().items():
        if k.startswith("text."):
            assert torch.equal(v, text_before[k]), k  # the text tower is kept


def test_wrong_architecture_checkpoints_fail_clearly(eva, tiny_clip, tmp_path):
    sd = to_eva_clip(eva)
    path = tmp_path / "shallow.pt"
    torch.save({k: v for k, v in sd.items() if not k.startswith("visual.blocks.2.")}, path)
    with pytest.raises(ValueError, match=r"missing keys \['visual\.trunk\.blocks\.2\."):
        load_clip(MODEL_NAME, checkpoint=path)
    # a plain CLIP ViT checkpoint into the EVA model: not an EVA layout at all
    with pytest.raises(ValueError, match="Not an EVA-CLIP"):
        convert_eva_clip_state_dict(tiny_clip.state_dict(), eva)
    # right names, wrong widths
    wide = {k: torch.cat([v, v], 0) if k.endswith("q_proj.weight") else v for k, v in sd.items()}
    with pytest.raises(ValueError, match="tensor shapes differ"):
        load_eva_clip_weights(make_eva(), wide)
    # an EVA checkpoint into a ViT model
    with pytest.raises(TypeError, match="EVA02"):
        convert_eva_clip_state_dict(sd, tiny_clip)


# --------------------------------------------------------------------------------------------
# segmentor presets and CLIPSelf
# --------------------------------------------------------------------------------------------


def test_preset_segmentor_with_eva_tower(eva, tmp_path):
    from ovdense.model_zoo import build_segmentor

    path = tmp_path / "eva.pt"
    torch.save(eva.state_dict(), path)
    seg = build_segmentor(
        "naclip",
        model=MODEL_NAME,
        checkpoint=path,
        device="cpu",
        short_side=None,
        window=None,
        pamr=None,
        templates="single",
    )
    assert type(seg.backbone) is DenseEVABackbone
    torch.manual_seed(3)
    image = torch.rand(1, 3, 40, 56)
    vocab = ["cat", "dog", "sky"]
    out = seg(image, vocab)
    assert out.labels.shape == (1, 40, 56)
    with torch.no_grad():
        bb = dense_backbone_for(eva, "naclip", pos_interp="scale_factor")  # the preset's
        dense = bb(bb.normalize(image)).dense
        emb = seg.encode_text(vocab).embeds
        logit = F.interpolate(
            torch.einsum("bdhw,nd->bnhw", dense, emb), size=(40, 56), mode="bilinear"
        )
    torch.testing.assert_close(out.probs, torch.softmax(40.0 * logit, dim=1), atol=1e-5, rtol=0)
    assert torch.equal(out.labels, logit.argmax(1))


def test_clipself_trains_and_exports_eva(tmp_path):
    from torchvision.ops import roi_align

    from ovdense.modeling.distill import CLIPSelf

    clip = make_eva(seed=3)
    model = CLIPSelf(clip, trainable_blocks=1, grid=(2, 2), crop_size=32)
    assert type(model.student) is DenseEVABackbone and type(model.teacher) is DenseEVABackbone
    trainable = {n for n, p in clip.visual.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("trunk.blocks.2.", "trunk.norm.", "trunk.head.")) for n in trainable
    )
    model.train()
    torch.manual_seed(4)
    batch = {"image": torch.rand(2, 3, 64, 48)}
    rois = model.regions(batch)
    with torch.no_grad():
        target = model.teacher_embeddings(batch["image"], rois)
        # the target is the tower's own forward (open_clip encode_image) of each 32x32 crop
        crops = roi_align(
            model.teacher.normalize(batch["image"]), rois, 32, 1.0, sampling_ratio=-1, aligned=True
        )
        ref = F.normalize(clip.encode_image(crops), dim=-1)
    assert target.shape == (8, 32)
    torch.testing.assert_close(target, ref, atol=1e-5, rtol=0)
    loss = model(batch)["loss_clipself"]
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert clip.visual.trunk.blocks[2].attn.q_proj.weight.grad.abs().sum() > 0
    assert clip.visual.trunk.blocks[0].attn.q_proj.weight.grad is None
    with torch.no_grad():
        clip.visual.trunk.blocks[2].attn.q_proj.weight.sub_(
            0.1 * clip.visual.trunk.blocks[2].attn.q_proj.weight.grad
        )
    out = model.save_open_clip_checkpoint(tmp_path / "clipself_eva.pt")
    reloaded = load_clip(MODEL_NAME, checkpoint=out)
    for k, v in clip.state_dict().items():
        assert torch.equal(reloaded.state_dict()[k], v), k
    _same_outputs(clip.eval(), reloaded)
