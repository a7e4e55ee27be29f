"""DenseCLIPBackbone and the last-block strategies against direct re-computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from ovdense.modeling.backbones import (
    DenseCLIPBackbone,
    build_strategy,
    gaussian_window_bias,
    interpolate_pos_embed,
    list_strategies,
)


def _tokens_before_last_block(clip, images):
    """Independent path: open_clip's own embedding + blocks (native grid only)."""
    v = clip.visual
    x = v._embeds(images)
    for blk in v.transformer.resblocks[:-1]:
        x = blk(x)
    return x


def _reference_last_block(block, x, strategy, grid, std=5.0):
    """Explicit per-head loops with softmax matrices (docs/methods.md#last-block-strategies)."""
    attn = block.attn
    heads = attn.num_heads
    h = block.ln_1(x)
    qkv = h @ attn.in_proj_weight.T + attn.in_proj_bias
    c = x.shape[-1]
    q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
    hd = c // heads
    s = hd**-0.5
    n = x.shape[1]
    omega = torch.zeros(n, n)
    gh, gw = grid
    for a in range(gh * gw):
        for b in range(gh * gw):
            ia, ja = divmod(a, gw)
            ib, jb = divmod(b, gw)
            omega[1 + a, 1 + b] = math.exp(-((ia - ib) ** 2 + (ja - jb) ** 2) / (2 * std**2))
    outs = []
    for i in range(heads):
        sl = slice(i * hd, (i + 1) * hd)
        qi, ki, vi = q[..., sl], k[..., sl], v[..., sl]
        if strategy == "vanilla":
            a = torch.softmax(qi @ ki.transpose(1, 2) * s, -1)
        elif strategy == "maskclip":
            a = torch.eye(n).expand(x.shape[0], n, n)
        elif strategy == "sclip":
            a = torch.softmax(qi @ qi.transpose(1, 2) * s, -1) + torch.softmax(
                ki @ ki.transpose(1, 2) * s, -1
            )
        elif strategy == "clearclip":
            a = torch.softmax(qi @ qi.transpose(1, 2) * s, -1)
        elif strategy == "naclip":
            a = torch.softmax(ki @ ki.transpose(1, 2) * s + omega, -1)
        outs.append(a @ vi)
    o = torch.cat(outs, -1) @ attn.out_proj.weight.T + attn.out_proj.bias
    if strategy in ("clearclip", "naclip"):
        return o
    y = x + o
    return y + block.mlp(block.ln_2(y))


@pytest.mark.parametrize("strategy", ["vanilla", "maskclip", "sclip", "clearclip", "naclip"])
def test_strategy_equals_formula(tiny_clip, strategy):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 32)
    bb = DenseCLIPBackbone(tiny_clip, strategy)
    with torch.no_grad():
        got, grid, _ = bb.forward_tokens(images)
        x = _tokens_before_last_block(tiny_clip, images)
        ref = _reference_last_block(tiny_clip.visual.transformer.resblocks[-1], x, strategy, grid)
    assert grid == (4, 4)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # and the dense output is ln_post + proj of the patch tokens, L2-normalised
    with torch.no_grad():
        dense = bb(images).dense
        proj = tiny_clip.visual.ln_post(ref[:, 1:]) @ tiny_clip.visual.proj
    expected = F.normalize(proj, dim=-1).transpose(1, 2).reshape(2, -1, 4, 4)
    torch.testing.assert_close(dense, expected, rtol=1e-4, atol=1e-4)


def test_vanilla_reproduces_open_clip(tiny_clip):
    torch.manual_seed(2)
    images = torch.randn(3, 3, 32, 32)
    bb = DenseCLIPBackbone(tiny_clip, "vanilla")
    visual = tiny_clip.visual
    with torch.no_grad():
        feats = bb(images)
        visual.output_tokens = True
        try:
            pooled, tokens = visual(images)
        finally:
            visual.output_tokens = False
    torch.testing.assert_close(feats.global_embed, F.normalize(pooled, dim=-1), atol=1e-5, rtol=0)
    ref = F.normalize(tokens @ visual.proj, dim=-1).transpose(1, 2).reshape(3, -1, 4, 4)
    torch.testing.assert_close(feats.dense, ref, atol=1e-5, rtol=0)


def test_naclip_bias_matches_formula_and_is_cached():
    omega = gaussian_window_bias((3, 4), std=2.0)
    assert omega.shape == (13, 13)
    assert torch.all(omega[0] == 0) and torch.all(omega[:, 0] == 0)
    # patch (0,0) -> token 1, patch (2,3) -> token 1 + 2*4 + 3 = 12
    assert omega[1, 12].item() == pytest.approx(math.exp(-(4 + 9) / 8.0))
    assert omega[5, 5].item() == pytest.approx(1.0)
    strat = build_strategy("naclip", std=3.0)
    a = strat.bias((5, 5), "cpu", torch.float32)
    b = strat.bias((5, 5), "cpu", torch.float32)
    assert a is b


def test_unknown_strategy_lists_valid_names(tiny_clip):
    with pytest.raises(ValueError) as err:
        DenseCLIPBackbone(tiny_clip, "naclipp")
    msg = str(err.value)
    assert "naclip" in msg and all(s in msg for s in list_strategies())
    assert "Did you mean 'naclip'" in msg


def test_keep_residual_override(tiny_clip):
    torch.manual_seed(3)
    images = torch.randn(1, 3, 32, 32)
    reduced = DenseCLIPBackbone(tiny_clip, "sclip", {"keep_residual": False})
    full = DenseCLIPBackbone(tiny_clip, "sclip")
    with torch.no_grad():
        x = _tokens_before_last_block(tiny_clip, images)
        block = tiny_clip.visual.transformer.resblocks[-1]
        out_full = _reference_last_block(block, x, "sclip", (4, 4))
        got, _, _ = reduced.forward_tokens(images)
        got_full, _, _ = full.forward_tokens(images)
    # reduced = attention output only: full - residual - ffn
    o = got
    y = x + o
    torch.testing.assert_close(y + block.mlp(block.ln_2(y)), out_full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_full, out_full, atol=1e-4, rtol=1e-4)


def test_pos_embed_identity_at_native_grid(tiny_clip):
    pe = tiny_clip.visual.positional_embedding.detach()
    for mode in ("size", "scale_factor"):
        out = interpolate_pos_embed(pe, (4, 4), (4, 4), mode)
        assert torch.equal(out, pe)


def test_pos_embed_modes_match_their_definitions(tiny_clip):
    pe = tiny_clip.visual.positional_embedding.detach()
    grid = pe[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    by_size = F.interpolate(grid, size=(6, 9), mode="bicubic", align_corners=False)
    by_scale = F.interpolate(
        grid, scale_factor=(6.1 / 4, 9.1 / 4), mode="bicubic", align_corners=False
    )
    out_size = interpolate_pos_embed(pe, (4, 4), (6, 9), "size")
    out_scale = interpolate_pos_embed(pe, (4, 4), (6, 9), "scale_factor")
    assert torch.equal(out_size[0], pe[0]) and torch.equal(out_scale[0], pe[0])
    torch.testing.assert_close(out_size[1:], by_size[0].permute(1, 2, 0).reshape(54, -1))
    torch.testing.assert_close(out_scale[1:], by_scale[0].permute(1, 2, 0).reshape(54, -1))
    assert not torch.allclose(out_size, out_scale)  # the repos' detail really changes values


@pytest.mark.parametrize("size", [(40, 56), (33, 17), (8, 8), (100, 30)])
def test_any_input_size(tiny_clip, size):
    bb = DenseCLIPBackbone(tiny_clip, "naclip", pos_interp="scale_factor")
    with torch.no_grad():
        f = bb(torch.randn(1, 3, *size))
    assert f.dense.shape == (1, 32, size[0] // 8, size[1] // 8)
    assert torch.isfinite(f.dense).all()
    torch.testing.assert_close(f.dense.norm(dim=1), torch.ones(1, size[0] // 8, size[1] // 8))


def test_image_smaller_than_patch(tiny_clip):
    bb = DenseCLIPBackbone(tiny_clip)
    with pytest.raises(ValueError, match="smaller than one 8x8 patch"):
        bb(torch.randn(1, 3, 5, 40))


def test_intermediates_are_block_outputs(tiny_clip):
    images = torch.randn(1, 3, 32, 32)
    bb = DenseCLIPBackbone(tiny_clip, "maskclip", out_indices=(-3, 1))
    v = tiny_clip.visual
    with torch.no_grad():
        f = bb(images)
        x = v._embeds(images)
        x0 = v.transformer.resblocks[0](x)
        x1 = v.transformer.resblocks[1](x0)
    assert set(f.intermediates) == {"block0", "block1"}
    torch.testing.assert_close(
        f.intermediates["block0"], x0[:, 1:].transpose(1, 2).reshape(1, 64, 4, 4)
    )
    torch.testing.assert_close(
        f.intermediates["block1"], x1[:, 1:].transpose(1, 2).reshape(1, 64, 4, 4)
    )


def test_non_native_grid_uses_interpolated_pos_embed(tiny_clip):
    """At a 6x5 grid the tokens equal a hand-built embedding with the interpolated positions."""
    images = torch.randn(1, 3, 48, 40)
    bb = DenseCLIPBackbone(tiny_clip, "vanilla", pos_interp="size")
    v = tiny_clip.visual
    with torch.no_grad():
        x, grid = bb.embed_tokens(images)
        patches = v.conv1(images).flatten(2).transpose(1, 2)
        cls = v.class_embedding.view(1, 1, -1)
        pe = interpolate_pos_embed(v.positional_embedding, (4, 4), (6, 5), "size")
        ref = v.ln_pre(torch.cat([cls, patches], 1) + pe)
    assert grid == (6, 5)
    torch.testing.assert_close(x, ref)


@pytest.mark.parametrize("src", [4, 7, 14])
@pytest.mark.parametrize("dst", [1, 3, 4, 9, 33])
@pytest.mark.parametrize("plus", [0.0, 0.1])
def test_bicubic_matrix_equals_interpolate(src, dst, plus):
    """The matrix form of the position-embedding resize (what a dynamic-size export traces)
    equals F.interpolate's bicubic resize, by size (plus=0) and by SCLIP's scale factor."""
    from ovdense.modeling.layers.pos_embed import bicubic_matrix

    v = torch.randn(1, 3, src, 1, generator=torch.Generator().manual_seed(src * dst))
    if plus == 0.0:
        ref = F.interpolate(v, size=(dst, 1), mode="bicubic", align_corners=False)
    else:
        ref = F.interpolate(
            v,
            scale_factor=((dst + plus) / src, 1.0),
            mode="bicubic",
            align_corners=False,
            recompute_scale_factor=False,
        )
    out = bicubic_matrix(dst, src, plus) @ v[0, :, :, 0].T  # [dst, 3]
    assert out.shape == (dst, 3)
    assert torch.allclose(out.T, ref[0, :, :, 0], atol=1e-5, rtol=0)
