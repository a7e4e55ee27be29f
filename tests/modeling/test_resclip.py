"""ResCLIP (``resclip``): each component equals a direct computation of its formula (loops), the
whole block equals the formula written out from open_clip's own blocks, the segmentor passes the
vocabulary, the presets build and run on CPU with a tiny random CLIP."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ovdense import get_config
from ovdense.config import LazyCall as L
from ovdense.config import instantiate
from ovdense.evaluation.runner import resolve_eval_config
from ovdense.modeling.backbones import dense_backbone_for
from ovdense.modeling.clip import load_clip
from ovdense.modeling.refiners import PAMR
from ovdense.modeling.segmentors import TrainingFreeSegmentor
from ovdense.modeling.strategies import ResCLIPAttention
from ovdense.modeling.strategies.resclip import feedback_affinity, patch_labels, path_is_clear


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# brute-force references of the pieces
# --------------------------------------------------------------------------------------------
def _labels_ref(probs, p, grid, thd):
    b, _, _, _ = probs.shape
    gh, gw = grid
    out = torch.zeros(b, gh, gw, dtype=torch.long)
    for n in range(b):
        for i in range(gh):
            for j in range(gw):
                counts: dict[int, int] = {}
                for y in range(i * p, i * p + p):
                    for x in range(j * p, j * p + p):
                        col = probs[n, :, y, x]
                        lab = int(col.argmax()) if float(col.max()) >= thd else 0
                        counts[lab] = counts.get(lab, 0) + 1
                best = max(counts.values())
                out[n, i, j] = min(lab for lab, c in counts.items() if c == best)
    return out


def _clear_ref(labels):
    gh, gw = labels.shape
    n = gh * gw
    dmax = max(gh, gw) - 1
    out = torch.zeros(n, n, dtype=torch.bool)
    for a in range(n):
        ra, ca = divmod(a, gw)
        for b in range(n):
            rb, cb = divmod(b, gw)
            d = max(abs(ra - rb), abs(ca - cb))
            ok = True
            for i in range(d + 1):  # dmax is a power of two in the tests: exact arithmetic
                r = round(ra + (rb - ra) * i / dmax)
                c = round(ca + (cb - ca) * i / dmax)
                ok &= int(labels[r, c]) == int(labels[ra, ca])
            out[a, b] = ok
    return out


def _feedback_ref(labels, std, dse=True):
    gh, gw = labels.shape
    n = gh * gw
    dmax = max(gh, gw) - 1
    clear = _clear_ref(labels)
    m = torch.zeros(n, n, dtype=torch.float64)
    for a in range(n):
        for b in range(n):
            if labels.flatten()[a] == labels.flatten()[b]:
                ra, ca = divmod(a, gw)
                rb, cb = divmod(b, gw)
                d = max(abs(ra - rb), abs(ca - cb))
                m[a, b] = 1.0 if (clear[a, b] or not dse) else math.exp(-d / dmax)
    size = min(n, int(6 * std + 1))
    size += 1 - size % 2
    g = [math.exp(-((t - size // 2) ** 2) / (2 * std**2)) for t in range(size)]
    g = [x / sum(g) for x in g]
    out = torch.zeros(n, n, dtype=torch.float64)
    for a in range(n):
        for j in range(n):
            out[a, j] = max(
                0.0,
                sum(
                    m[a, j + t - size // 2] * g[t]
                    for t in range(size)
                    if 0 <= j + t - size // 2 < n
                ),
            )
        out[a] /= out[a].sum() + 1e-8
    return out


def test_patch_labels_are_the_most_frequent_pixel_label():
    probs = torch.rand(2, 4, 19, 27, generator=_gen(0)).softmax(1)
    for thd in (0.0, 0.3):
        got = patch_labels(probs, 4, (4, 6), thd)
        assert torch.equal(got, _labels_ref(probs, 4, (4, 6), thd))


@pytest.mark.parametrize("grid", [(5, 5), (3, 5), (5, 3)])
def test_path_check_follows_its_samples(grid):
    labels = torch.randint(0, 3, grid, generator=_gen(1))
    labels[1:3, 1:3] = 1  # a region, so both outcomes occur
    assert torch.equal(path_is_clear(labels), _clear_ref(labels))


def test_path_check_of_a_batch_in_chunks_of_samples(monkeypatch):
    # the samples of all pairs and images are gathered together, in chunks on large grids
    from ovdense.modeling.strategies import resclip as resclip_module

    labels = torch.randint(0, 3, (3, 5, 5), generator=_gen(9))
    labels[:, 1:4, 1:3] = 1
    want = torch.stack([_clear_ref(lab) for lab in labels])
    for chunk in (1, 2 * 25 * 25 * 3, 1 << 22):  # one sample per gather, two, all five
        monkeypatch.setattr(resclip_module, "_GATHER_CHUNK", chunk)
        assert torch.equal(resclip_module._paths_clear(labels), want)
    m = feedback_affinity(labels, std=1.5)
    for b in range(3):  # the batch is the images one at a time
        assert torch.equal(m[b], feedback_affinity(labels[b : b + 1], std=1.5)[0])


@pytest.mark.parametrize("dse", [True, False])
def test_feedback_affinity_equals_its_formula(dse):
    labels = torch.randint(0, 3, (2, 5, 5), generator=_gen(2))
    got = feedback_affinity(labels, std=1.5, delete_same_entity=dse)
    for b in range(2):
        torch.testing.assert_close(
            got[b].double(), _feedback_ref(labels[b], 1.5, dse), atol=1e-6, rtol=1e-5
        )
    # a kernel as wide as the row (std 5 on 9 patches)
    small = torch.randint(0, 2, (1, 3, 3), generator=_gen(3))
    torch.testing.assert_close(
        feedback_affinity(small, 5.0)[0].double(),
        _feedback_ref(small[0], 5.0),
        atol=1e-6,
        rtol=1e-5,
    )


# --------------------------------------------------------------------------------------------
# the whole block, from open_clip's own blocks
# --------------------------------------------------------------------------------------------
def _omega(grid, n, std=5.0):
    gh, gw = grid
    omega = torch.zeros(n, n)
    for a in range(gh * gw):
        for b in range(gh * gw):
            (ia, ja), (ib, jb) = divmod(a, gw), divmod(b, gw)
            omega[1 + a, 1 + b] = math.exp(-((ia - ib) ** 2 + (ja - jb) ** 2) / (2 * std**2))
    return omega


def _heads(blk, x):
    """Per-head q, k, v ``[B, H, L, hd]`` of an open_clip block from its weights."""
    a = blk.attn
    c = x.shape[-1]
    qkv = blk.ln_1(x) @ a.in_proj_weight.T + a.in_proj_bias
    h = a.num_heads

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], h, c // h).transpose(1, 2)

    return split(qkv[..., :c]), split(qkv[..., c : 2 * c]), split(qkv[..., 2 * c :])


def _finish(blk, x, o, keep):
    o = o.transpose(1, 2).reshape(x.shape)
    out = o @ blk.attn.out_proj.weight.T + blk.attn.out_proj.bias
    if not keep:
        return out
    y = x + out
    return y + blk.mlp(blk.ln_2(y))


KW = {"rcs_weights": (2.0, 0.4), "sfr_weights": (1.8, 0.7), "temp_thd": 0.05, "sfr_std": 2.0}


@pytest.mark.parametrize("base", ["naclip", "sclip", "clearclip"])
def test_resclip_block_equals_its_formula(tiny_clip, base):
    text = F.normalize(torch.randn(6, 32, generator=_gen(4)), dim=-1)
    strategy = ResCLIPAttention(base=base, rcs_layers=(1,), text_embeds=text, **KW)
    backbone = dense_backbone_for(tiny_clip, strategy, pos_interp="scale_factor")
    images = torch.randn(2, 3, 40, 40, generator=_gen(5))
    with torch.no_grad():
        got, grid, _ = backbone.forward_tokens(images)
        v_ = tiny_clip.visual
        x, grid = backbone.embed_tokens(images)
        outs = []
        for blk in v_.transformer.resblocks[:-1]:
            x = blk(x)
            outs.append(x)
        blk = v_.transformer.resblocks[-1]
        q, k, v = _heads(blk, x)
        s = q.shape[-1] ** -0.5
        q1, k1, _ = _heads(v_.transformer.resblocks[1], outs[0])
        rcs = torch.softmax(q1 @ k1.transpose(-1, -2) * s, -1)
        n = x.shape[1]
        terms = {
            "naclip": [(k @ k.transpose(-1, -2) * s, _omega(grid, n))],
            "sclip": [(q @ q.transpose(-1, -2) * s, 0.0), (k @ k.transpose(-1, -2) * s, 0.0)],
            "clearclip": [(q @ q.transpose(-1, -2) * s, 0.0)],
        }[base]
        keep = base == "sclip"

        def weights(fb):
            a = 0.0
            for logits, bias in terms:
                if fb is not None:
                    logits = 1.8 * (0.3 * logits + 0.7 * fb[:, None])
                a = a + torch.softmax(logits + bias, -1)
            return 2.0 * (0.6 * a + 0.4 * rcs)

        first = _finish(blk, x, weights(None) @ v, keep)
        feats = F.normalize(v_.ln_post(first[:, 1:]) @ v_.proj, dim=-1)
        logits = (feats @ text.T).transpose(1, 2).reshape(2, 6, *grid)
        logits = F.interpolate(logits, size=(40, 40), mode="bilinear", align_corners=False)
        probs = torch.softmax(40.0 * PAMR(10, (8, 16))(images, logits), 1)
        labels = _labels_ref(probs, 8, grid, 0.05)
        fb = torch.zeros(2, n, n)
        for b in range(2):
            fb[b, 1:, 1:] = _feedback_ref(labels[b], 2.0).float()
            fb[b] /= fb[b].max()
        expected = _finish(blk, x, weights(fb) @ v, keep)
    assert labels.unique().numel() > 1  # the feedback is not trivial here
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_resclip_without_its_modules_is_its_base(tiny_clip):
    images = torch.randn(1, 3, 40, 48, generator=_gen(6))
    for base in ("naclip", "sclip", "clearclip", "vanilla"):
        plain = dense_backbone_for(tiny_clip, base)
        res = dense_backbone_for(tiny_clip, ResCLIPAttention(base=base, rcs=False, sfr=False))
        with torch.no_grad():
            torch.testing.assert_close(res(images).dense, plain(images).dense, atol=1e-5, rtol=1e-5)


def test_resclip_errors(tiny_clip):
    with pytest.raises(ValueError, match="sum of softmax terms"):
        ResCLIPAttention(base="maskclip")
    with pytest.raises(ValueError, match="not ResCLIP"):
        ResCLIPAttention(base=ResCLIPAttention())
    with pytest.raises(ValueError, match=">= 1"):
        ResCLIPAttention(rcs_layers=(0, 1))
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="rcs_layers"):
        dense_backbone_for(tiny_clip, ResCLIPAttention(sfr=False))(images)  # 5..8 of 3 blocks
    with pytest.raises(RuntimeError, match="vocabulary"):
        dense_backbone_for(tiny_clip, ResCLIPAttention(rcs_layers=(1,)))(images)


# --------------------------------------------------------------------------------------------
# segmentor, presets
# --------------------------------------------------------------------------------------------
def _tiny_segmentor(clip):
    return TrainingFreeSegmentor(
        clip,
        strategy="resclip",
        strategy_kwargs={"rcs_layers": (1,), "temp_thd": 0.0},
        templates="single",
        short_side=40,
        window=32,
        stride=16,
    )


def test_segmentor_passes_the_vocabulary(tiny_clip):
    seg = _tiny_segmentor(tiny_clip)
    assert seg.backbone.strategy.needs_text
    images = torch.rand(1, 3, 40, 56, generator=_gen(7))
    vocab = ["cat", "dog", "sky"]
    out = seg(images, vocab)
    assert out.labels.shape == (1, 40, 56)
    with pytest.raises(ValueError, match="needs the vocabulary"):
        seg.encode_image(images)
    text = seg.encode_text(vocab)
    again = seg.decode(seg.encode_image(images, text), text)
    assert torch.equal(again.labels, out.labels)
    batch = seg.segment_batch([images[0], images[0, :, :32, :40]], vocab)
    assert torch.equal(batch[0].labels, out.labels)
    # the features depend on the vocabulary (semantic feedback)
    other = seg.encode_text(["tree", "road", "person", "car"])
    assert not torch.allclose(
        seg.encode_image(images, other).dense, seg.encode_image(images, text).dense
    )


def test_presets_build_and_run_with_a_tiny_clip(tiny_clip_config):
    cfg = get_config("resclip")
    kw = cfg.model.strategy_kwargs
    assert (
        cfg.model.strategy == "resclip" and kw.base == "naclip" and kw.base_kwargs == {"std": 5.0}
    )
    assert tuple(kw.rcs_layers) == (5, 6, 7, 8) and tuple(kw.rcs_weights) == (2.0, 0.4)
    assert tuple(kw.sfr_weights) == (1.8, 0.7) and kw.temp_thd == 0.25 and kw.pamr_iters == 10
    assert cfg.model.pamr is None and cfg.model.pos_interp == "scale_factor"
    assert (cfg.model.short_side, cfg.model.window, cfg.model.stride) == (336, 224, 112)
    cfg.model.clip = L(load_clip)(config=tiny_clip_config)
    cfg.model.strategy_kwargs.rcs_layers = (1,)
    cfg.model.update(templates="single", short_side=40, window=32, stride=16)
    seg = instantiate(cfg.model)
    assert seg(torch.rand(1, 3, 40, 50), ["a", "b"]).labels.shape == (1, 40, 50)

    voc = resolve_eval_config("resclip", "voc21")
    assert voc.class_rule == "naclip" and voc.model.window is None and voc.model.prob_thd == 0.1
    assert voc.model.strategy_kwargs["temp_thd"] == 0.5
    assert tuple(voc.model.strategy_kwargs["sfr_weights"]) == (2.2, 0.7)
    city = resolve_eval_config("resclip", "cityscapes")
    assert city.model.short_side == 560 and tuple(city.model.strategy_kwargs["rcs_weights"]) == (
        2.0,
        0.2,
    )


def test_predictor_computes_resclip_features_with_the_vocabulary(tiny_clip):
    from ovdense.predictor import Predictor

    seg = _tiny_segmentor(tiny_clip)
    rgb = (torch.rand(40, 56, 3, generator=_gen(8)) * 255).to(torch.uint8).numpy()
    vocab = ["cat", "dog", "sky"]
    want = seg(torch.from_numpy(rgb).permute(2, 0, 1)[None], vocab).labels[0]
    pred = Predictor(seg)
    pred.set_image(rgb)
    assert pred.is_image_set
    assert torch.equal(torch.as_tensor(pred.predict(vocab).labels), want)
    batch = pred.predict_batch([rgb, rgb[:32, :40]], vocab)
    assert torch.equal(torch.as_tensor(batch[0].labels), want)
