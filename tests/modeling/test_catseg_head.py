"""CAT-Seg's cost-aggregation head: values of each block against written-out formulas, shape
contracts, class chunking, class permutation equivariance, vocabulary-size (in)dependence, the
top-k class selection, and the head in the segmentor's slot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovdense.modeling.heads import CATSegHead, build_seg_head
from ovdense.modeling.heads.catseg import ClassAggregation, GuidedSwinBlock
from ovdense.modeling.segmentors import TrainingFreeSegmentor

D, W = 32, 64  # tiny CLIP: joint dim, ViT width


def tiny_head(**kw) -> CATSegHead:
    args = dict(
        embed_dim=D,
        intermediate_dim=W,
        intermediate_layers=(0, 1),
        num_templates=3,
        hidden_dim=32,
        num_layers=2,
        num_heads=4,
        window_size=4,
        pad_len=16,
        guidance_dim=16,
        decoder_dims=(32, 16),
        decoder_guidance_dims=(16, 16),
        decoder_guidance_proj_dims=(8, 8),
        class_chunk=None,
    )
    args.update(kw)
    torch.manual_seed(0)
    head = CATSegHead(**args)
    with torch.no_grad():  # zero-initialised parts (padding) random too: every term is seen
        for p in head.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    return head.eval()


def inputs(b=2, n=10, h=6, w=7, p=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(b, D, h, w, generator=g)
    embeds = torch.randn(n, p, D, generator=g)
    inter = [torch.randn(b, W, h, w, generator=g) for _ in range(2)]
    return dense, embeds, inter


# --------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------
def test_cost_volume_is_the_cosine_per_template():
    dense, embeds, _ = inputs()
    cost = CATSegHead.cost_volume(dense, embeds)
    assert cost.shape == (2, 3, 10, 6, 7)
    b, p, n, y, x = 1, 2, 7, 3, 5
    want = F.cosine_similarity(dense[b, :, y, x], embeds[n, p], dim=0)
    torch.testing.assert_close(cost[b, p, n, y, x], want)


def test_class_aggregation_is_linear_attention_over_padded_classes():
    """The two-pass chunked form equals the literal one: pad the class sequence with the
    padding token to pad_len, linear attention (elu + 1) with guided q/k, MLP, residual."""
    torch.manual_seed(0)
    agg = ClassAggregation(dim=8, guidance_dim=4, num_heads=2, pad_len=6).eval()
    with torch.no_grad():
        for p in agg.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    x = torch.randn(1, 4, 2, 3, 8)  # [B, N, h, w, C]
    g = torch.randn(4, 4)
    with torch.no_grad():
        got = agg(x, g)
        # reference, pixel by pixel
        want = torch.empty_like(x)
        pad_x, pad_g = agg.pad_token.view(1, 8), agg.pad_guidance.view(1, 4)
        for yy in range(2):
            for xx in range(3):
                tok = torch.cat([x[0, :, yy, xx], pad_x.expand(2, -1)])  # [6, C]
                gd = torch.cat([g, pad_g.expand(2, -1)])
                n = agg.norm1(tok)
                q = agg.q(torch.cat([n, gd], -1)).view(6, 2, 4)
                k = agg.k(torch.cat([n, gd], -1)).view(6, 2, 4)
                v = agg.v(n).view(6, 2, 4)
                q, k = F.elu(q) + 1, F.elu(k) + 1
                out = torch.empty(6, 2, 4)
                for hh in range(2):
                    a = q[:, hh] @ k[:, hh].T  # [L, S] unnormalised
                    out[:, hh] = (a @ v[:, hh]) / (a.sum(-1, keepdim=True) + agg.eps)
                y = tok + out.reshape(6, 8)
                y = y + agg.mlp(agg.norm2(y))
                want[0, :, yy, xx] = x[0, :, yy, xx] + y[:4]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_swin_block_with_one_window_is_global_guided_attention():
    torch.manual_seed(0)
    blk = GuidedSwinBlock(dim=8, guidance_dim=4, num_heads=2, window_size=8, shifted=True).eval()
    x = torch.randn(1, 2, 3, 4, 8)  # grid smaller than the window: one window, no shift
    g = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        got = blk(x, g)
        want = torch.empty_like(x)
        for k in range(2):
            t = x[0, k].reshape(12, 8)
            n = blk.norm1(t)
            gg = g[0].reshape(12, 4)
            q = blk.q(torch.cat([n, gg], -1)).view(12, 2, 4).transpose(0, 1)
            kk = blk.k(torch.cat([n, gg], -1)).view(12, 2, 4).transpose(0, 1)
            v = blk.v(n).view(12, 2, 4).transpose(0, 1)
            a = torch.softmax(q @ kk.transpose(1, 2) / 2.0, -1)
            o = blk.proj((a @ v).transpose(0, 1).reshape(12, 8))
            y = t + o
            want[0, k] = (y + blk.mlp(blk.norm2(y))).view(3, 4, 8)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shifted", [False, True])
def test_swin_block_attends_within_windows(shifted):
    """A change in one cell moves outputs only in the cells sharing its window: the 2x2 window
    around it (regular), or the shifted window region (shifted, incl. the wrap-around mask)."""
    torch.manual_seed(0)
    blk = GuidedSwinBlock(dim=8, guidance_dim=0, num_heads=2, window_size=2, shifted=shifted)
    x = torch.randn(1, 1, 4, 4, 8)
    x2 = x.clone()
    x2[0, 0, 0, 0] += torch.randn(8)  # not a constant: norm1 would remove it
    with torch.no_grad():
        changed = (blk.eval()(x2, None) - blk(x, None)).abs().sum(-1)[0, 0] > 1e-6
    want = torch.zeros(4, 4, dtype=torch.bool)
    # regular: window rows/cols 0-1; shifted by 1: cell (0, 0) is alone in its region (the
    # rolled window holding it also holds cells from the other border, which the mask hides)
    if shifted:
        want[0, 0] = True
    else:
        want[:2, :2] = True
    assert torch.equal(changed, want)


def test_grid_not_a_multiple_of_the_window_masks_the_padding():
    torch.manual_seed(0)
    blk = GuidedSwinBlock(dim=8, guidance_dim=0, num_heads=2, window_size=4, shifted=False)
    x = torch.randn(1, 1, 5, 6, 8)
    with torch.no_grad():
        whole = blk.eval()(x, None)
        # the top-left 4x4 window holds no padding: it equals the block on that window alone
        part = blk(x[:, :, :4, :4].contiguous(), None)
    torch.testing.assert_close(whole[:, :, :4, :4], part, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(whole).all()


# --------------------------------------------------------------------------------------------
# the head
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [(6, 7), (4, 4), (3, 5), (8, 8)])
def test_head_shape_contract(grid):
    head = tiny_head()
    dense, embeds, inter = inputs(h=grid[0], w=grid[1])
    with torch.no_grad():
        out = head(dense, embeds, inter)
    assert out.shape == (2, 10, 4 * grid[0], 4 * grid[1])
    assert torch.isfinite(out).all() and out.std() > 0


def test_head_needs_its_inputs():
    head = tiny_head()
    dense, embeds, inter = inputs()
    with pytest.raises(ValueError, match="intermediates"):
        head(dense, embeds)
    with pytest.raises(ValueError, match="template"):
        head(dense, embeds[:, :2], inter)
    with pytest.raises(ValueError, match="dim"):
        head(dense[:, :16], embeds[..., :16], inter)
    # no intermediate layers: the decoder has no guidance, the head takes none
    bare = tiny_head(intermediate_layers=())
    assert bare(dense, embeds).shape == (2, 10, 24, 28)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunked_classes_equal_unchunked(training, chunk):
    head = tiny_head().train(training)
    dense, embeds, inter = inputs()
    with torch.no_grad():
        whole = head(dense, embeds, inter)
        head.class_chunk = chunk
        parts = head(dense, embeds, inter)
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=1e-5)


def test_class_permutation_equivariance():
    head = tiny_head(class_chunk=4)
    dense, embeds, inter = inputs(n=9)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = head(dense, embeds, inter)
        out_p = head(dense, embeds[perm], inter)
    torch.testing.assert_close(out_p, out[:, perm], atol=1e-5, rtol=1e-5)


def test_vocabulary_size_dependence_is_that_of_class_aggregation():
    """Documents the architecture: the class aggregation attends over all classes, so a class's
    logits change when unrelated classes join the vocabulary; without aggregation layers each
    class is decoded on its own and they do not."""
    dense, embeds, inter = inputs(n=12)
    head = tiny_head()
    with torch.no_grad():
        few, many = head(dense, embeds[:5], inter), head(dense, embeds, inter)
    assert (few - many[:, :5]).abs().max() > 1e-3
    solo = tiny_head(num_layers=0)
    with torch.no_grad():
        few, many = solo(dense, embeds[:5], inter), solo(dense, embeds, inter)
    torch.testing.assert_close(few, many[:, :5], atol=1e-6, rtol=1e-6)


def test_more_classes_than_pad_len_decodes_the_top_classes():
    """The official behaviour: with more than pad_len classes, each image aggregates the
    pad_len classes of highest max cost; the others get -100."""
    head = tiny_head(pad_len=6)
    dense, embeds, inter = inputs(n=10)
    with torch.no_grad():
        out = head(dense, embeds, inter)
        cost = CATSegHead.cost_volume(dense, embeds)
        score = cost.transpose(1, 2).flatten(2).amax(-1)  # [B, N]
        for i in range(2):
            top = score[i].topk(6).indices.sort().values
            rest = torch.ones(10, dtype=torch.bool)
            rest[top] = False
            assert (out[i, rest] == -100).all()
            alone = head(dense[i : i + 1], embeds[top], [t[i : i + 1] for t in inter])
            torch.testing.assert_close(out[i, top], alone[0], atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_head_parameter():
    head = tiny_head().train()
    dense, embeds, inter = inputs()
    head(dense, embeds, inter).square().mean().backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


# --------------------------------------------------------------------------------------------
# in the segmentor's slot
# --------------------------------------------------------------------------------------------
def tiny_catseg_segmentor(clip, **kw):
    head = tiny_head(class_chunk=2)
    return TrainingFreeSegmentor(
        clip,
        strategy="catseg",
        templates="shapes",
        head=head,
        logit_scale=1.0,
        short_side=40,
        window=32,
        stride=16,
        **kw,
    )


def test_head_through_the_slot(tiny_clip):
    seg = tiny_catseg_segmentor(tiny_clip)
    assert seg.backbone.out_indices == (0, 1) and seg.head_per_template
    vocab = ["red circle", "blue square", "sky"]
    text = seg.encode_text(vocab)
    assert text.template_embeds is not None and text.template_embeds.shape == (3, 3, D)
    img = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    feats = seg.encode_image(img)
    assert set(feats.intermediates) == {"block0", "block1"}
    assert feats.intermediates["block0"].shape == (len(feats.windows), W, 4, 4)
    out = seg.decode(feats, text)
    assert out.labels.shape == (1, 40, 56) and out.probs is not None
    # the window logits are the head's on each window's features: check the first window
    logits = seg.head_scores(
        feats.dense[:1],
        text.template_embeds,
        [feats.intermediates[f"block{i}"][:1] for i in (0, 1)],
    )
    with torch.no_grad():
        y1, y2, x1, x2 = feats.windows[0]
        crop = seg.backbone.normalize(F.interpolate(img, size=feats.resized_size, mode="bilinear"))
        direct = seg.backbone(crop[:, :, y1:y2, x1:x2])
        assert seg.head_raw_features  # the official guidance input: unnormalised features
        want = seg.head(
            direct.unnormalized(),
            text.template_embeds,
            [direct.intermediates["block0"], direct.intermediates["block1"]],
        )
    torch.testing.assert_close(logits, want, atol=1e-5, rtol=1e-5)
    # labels-only decoding (class chunks) gives the same labels, up to float near-ties (the
    # random head's classes can score alike where the unnormalised features are small)
    lean = seg.decode(feats, text, return_probs=False).labels
    top2 = out.probs.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-5
    assert clear.float().mean() > 0.5
    assert torch.equal(lean[clear], out.labels[clear])


def test_head_by_name_and_errors(tiny_clip):
    head = build_seg_head("catseg", embed_dim=D, intermediate_dim=W, intermediate_layers=(0, 5))
    with pytest.raises(ValueError, match="blocks"):
        TrainingFreeSegmentor(tiny_clip, strategy="catseg", head=head)
    with pytest.raises(ValueError, match="two block indices"):
        build_seg_head("catseg", intermediate_layers=(1,))


def test_head_under_bf16_autocast():
    """Mixed precision (the trainer's ``amp``): finite logits close to fp32; the class sums are
    kept in float32."""
    head = tiny_head(class_chunk=3)
    dense, embeds, inter = inputs()
    with torch.no_grad():
        want = head(dense, embeds, inter)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = head(dense, embeds, inter)
    assert torch.isfinite(got).all()
    assert (got.float() - want).abs().mean() < 0.05 * want.abs().mean()


def test_onnx_export_refuses_the_head_in_one_sentence(tiny_clip):
    from ovdense.modeling.onnx_export import FixedVocabularySegmentor, TextConditionedBackbone

    seg = tiny_catseg_segmentor(tiny_clip)
    for build in (
        lambda: FixedVocabularySegmentor(seg, ["cat", "dog"], (40, 56)),
        lambda: TextConditionedBackbone(seg),
    ):
        with pytest.raises(ValueError, match="per-template embeddings or intermediate"):
            build()
