"""SC-CLIP (``scclip``): each component equals a direct computation of its formula (loops), the
whole block equals the formula written out from open_clip's own blocks, the presets build and
run on CPU with a tiny random CLIP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovdense import get_config
from ovdense.config import LazyCall as L
from ovdense.config import instantiate
from ovdense.evaluation.runner import resolve_eval_config
from ovdense.modeling.backbones import dense_backbone_for
from ovdense.modeling.clip import load_clip
from ovdense.modeling.strategies import SCCLIPAttention
from ovdense.modeling.strategies.scclip import aggregate, lof_outliers, resolve_anomalies

TINY = {"pre_adjust_idx": 1, "post_adjust_idx": 0, "multi_start_idx": 0, "multi_end_idx": 2}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _lof_ref(x, k, c):
    n = x.shape[0]
    d = [[float(((x[i] - x[j]) ** 2).sum()) for j in range(n)] for i in range(n)]
    # neighbours: the k nearest others (ties in the tests' random data do not occur)
    nbrs = [sorted((j for j in range(n) if j != i), key=lambda j: d[i][j])[:k] for i in range(n)]
    kd = [d[i][nbrs[i][-1]] for i in range(n)]
    lrd = [k / kd[i] for i in range(n)]
    lof = torch.tensor([sum(lrd[j] for j in nbrs[i]) / k / lrd[i] for i in range(n)])
    return lof > torch.quantile(lof, 1 - c)


def _resolve_ref(fmap, anomalies):
    b, c, h, w = fmap.shape
    out = fmap.clone()
    for n in range(b):
        for i in range(h):
            for j in range(w):
                if not anomalies[n, i, j]:
                    continue
                nb = [
                    fmap[n, :, y, x]
                    for y in range(i - 1, i + 2)
                    for x in range(j - 1, j + 2)
                    if (y, x) != (i, j) and 0 <= y < h and 0 <= x < w and not anomalies[n, y, x]
                ]
                if nb:
                    out[n, :, i, j] = torch.stack(nb).mean(0)
    return out


def test_lof_equals_its_formula():
    x = torch.randn(40, 5, generator=_gen(0))
    x[7] += 6.0  # a clear outlier
    got = lof_outliers(x, n_neighbors=6, contamination=0.1)
    assert torch.equal(got, _lof_ref(x, 6, 0.1)) and got[7]
    assert not lof_outliers(x[:1]).any()  # one token: none


def test_resolve_anomalies_equals_its_formula():
    fmap = torch.randn(2, 3, 4, 5, generator=_gen(1))
    anomalies = torch.rand(2, 4, 5, generator=_gen(2)) < 0.3
    anomalies[1, :2, :2] = True
    torch.testing.assert_close(resolve_anomalies(fmap, anomalies), _resolve_ref(fmap, anomalies))


def test_aggregate_equals_its_formula():
    t = torch.randn(2, 6, 3, generator=_gen(3))
    corr = torch.rand(2, 6, 6, generator=_gen(4))
    want = torch.stack(
        [
            torch.stack(
                [
                    sum(corr[b, i, j] * t[b, j] for j in range(6)) / (corr[b, i].sum() + 1e-6)
                    for i in range(6)
                ]
            )
            for b in range(2)
        ]
    )
    torch.testing.assert_close(aggregate(t, corr), want)


def _heads(blk, x):
    a = blk.attn
    c = x.shape[-1]
    qkv = blk.ln_1(x) @ a.in_proj_weight.T + a.in_proj_bias
    h = a.num_heads

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], h, c // h).transpose(1, 2)

    return split(qkv[..., :c]), split(qkv[..., c : 2 * c]), split(qkv[..., 2 * c :])


def _out(blk, o):
    b, h, n, hd = o.shape
    return (
        o.transpose(1, 2).reshape(b, n, h * hd) @ blk.attn.out_proj.weight.T
        + blk.attn.out_proj.bias
    )


@pytest.mark.parametrize("size", [(48, 48), (40, 56)])
def test_scclip_block_equals_its_formula(tiny_clip, size):
    strategy = SCCLIPAttention(lof_neighbors=8, **TINY)
    backbone = dense_backbone_for(tiny_clip, strategy, pos_interp="scale_factor")
    images = torch.randn(2, 3, *size, generator=_gen(5))
    with torch.no_grad():
        got, grid, _ = backbone.forward_tokens(images)
        v_ = tiny_clip.visual
        x, grid = backbone.embed_tokens(images)
        outs = []
        for blk in v_.transformer.resblocks[:-1]:
            x = blk(x)
            outs.append(x)
        blk = v_.transformer.resblocks[-1]
        gh, gw = grid
        c = x.shape[-1]
        expected = []
        for b in range(2):
            anom = _lof_ref(x[b, 1:], 8, 0.05).reshape(1, gh, gw)
            assert anom.any()

            def resolved(t, anom=anom):
                m = t[1:].T.reshape(1, c, gh, gw)
                return _resolve_ref(m, anom).reshape(c, -1).T

            def cos(t):
                t = F.normalize(t, dim=-1)
                return t @ t.T

            sim = cos(resolved(outs[1][b]))
            post = cos(outs[0][b][1:])
            post = torch.where(post < 0.4, torch.zeros(()), post)

            def agg(t, corr):
                return torch.stack(
                    [
                        (corr[i, :, None] * t).sum(0) / (corr[i].sum() + 1e-6)
                        for i in range(t.shape[0])
                    ]
                )

            def attn(p, sim=sim):
                _, k, v = _heads(blk, p[None])
                logits = (sim - sim.mean()) * 3.0
                a = torch.where(logits >= 0, logits.exp(), torch.zeros(()))
                a = a / a.sum(-1, keepdim=True)
                kk = torch.softmax(k @ k.transpose(-1, -2) * k.shape[-1] ** -0.5, -1)
                return _out(blk, (a + kk) / 2 @ v)[0]

            p = resolved(x[b])
            o = agg(
                attn(agg(p, torch.where(sim < 0.4, torch.zeros(()), sim))) + 0.3 * x[b, :1], post
            )
            fused = outs[0][b] + outs[1][b]
            o = o + agg(attn(fused[1:]) + 0.3 * fused[:1], post)
            q, k, v = _heads(blk, x[b : b + 1])
            cls = _out(
                blk, torch.softmax(q[:, :, :1] @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, -1) @ v
            )
            cls = x[b : b + 1, :1] + cls
            cls = cls + blk.mlp(blk.ln_2(cls))
            expected.append(torch.cat([cls[0], o]))
        expected = torch.stack(expected)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_scclip_errors(tiny_clip):
    with pytest.raises(ValueError, match="multi_start_idx"):
        SCCLIPAttention(multi_start_idx=5, multi_end_idx=5)
    with pytest.raises(ValueError, match="levels"):
        dense_backbone_for(tiny_clip, SCCLIPAttention())(torch.randn(1, 3, 32, 32))


def test_presets_build_and_run_with_a_tiny_clip(tiny_clip_config):
    cfg = get_config("scclip")
    kw = cfg.model.strategy_kwargs
    assert cfg.model.strategy == "scclip"
    assert (kw.pre_adjust_idx, kw.post_adjust_idx, kw.multi_start_idx, kw.multi_end_idx) == (
        8,
        3,
        3,
        10,
    )
    assert kw.res_cls == 0.3 and kw.beta == 0.4 and kw.lof_neighbors == 30
    assert (cfg.model.short_side, cfg.model.window, cfg.model.stride) == (336, 224, 112)
    assert cfg.model.logit_scale == 40.0 and cfg.model.pamr is None
    cfg.model.clip = L(load_clip)(config=tiny_clip_config)
    cfg.model.strategy_kwargs.update(TINY)
    cfg.model.update(templates="single", short_side=40, window=32, stride=16)
    seg = instantiate(cfg.model)
    assert seg(torch.rand(1, 3, 40, 50), ["a", "b"]).labels.shape == (1, 40, 50)

    voc = resolve_eval_config("scclip", "voc21")
    assert voc.class_rule == "sclip" and voc.model.window == 224
    assert (voc.model.logit_scale, voc.model.prob_thd, voc.model.area_thd) == (50.0, 0.15, 0.1)
    obj = resolve_eval_config("scclip", "coco_object")
    assert (obj.model.logit_scale, obj.model.prob_thd) == (55.0, 0.35)
