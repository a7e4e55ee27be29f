"""The segmentor's slots: a head and a refiner defined and registered here only (no change to
ovdense) run end to end and match direct computations; window stitching; registries."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ovdense.config import LazyConfig, instantiate
from ovdense.modeling.backbones import dense_backbone_for
from ovdense.modeling.backbones.base import DenseFeatures
from ovdense.modeling.heads import SEG_HEADS, CosineSegHead, list_seg_heads
from ovdense.modeling.refiners import REFINERS, CLIPDINOiserRefiner
from ovdense.modeling.segmentors import (
    SaliencyRule,
    Segmentor,
    TrainingFreeSegmentor,
    stitch_windows,
)
from ovdense.modeling.text import TextEncoder

EMBED = 32  # tiny CLIP joint-space width (tests/conftest.py)


@SEG_HEADS.register("test_linear_probe")
class LinearProbeHead(nn.Module):
    """A per-pixel linear classifier over the text embeddings:
    ``scores[b, n] = <W dense[b, :, y, x], embeds[n]> + bias[n mod 3]`` (toy trainable head)."""

    def __init__(self, dim: int = EMBED, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Parameter(torch.eye(dim) + 0.3 * torch.randn(dim, dim, generator=g))
        self.bias = nn.Parameter(0.05 * torch.randn(3, generator=g))

    def forward(self, dense, embeds):
        n = embeds.shape[0]
        bias = self.bias[torch.arange(n, device=dense.device) % 3]
        return torch.einsum("bdhw,ed,ne->bnhw", dense, self.proj, embeds) + bias[:, None, None]


@REFINERS.register("test_smooth")
class SmoothRefiner(nn.Module):
    """Toy refiner: 3x3 average of the features (renormalised) and two auxiliary maps, the
    per-cell feature norm before renormalising (``"norm"``) and a constant saliency."""

    def __init__(self, saliency: float = 0.0) -> None:
        super().__init__()
        self.saliency = saliency

    def forward(self, features, images):
        smooth = F.avg_pool2d(features.dense, 3, stride=1, padding=1, count_include_pad=False)
        norm = smooth.norm(dim=1, keepdim=True)
        background = torch.full_like(norm, self.saliency)
        out = DenseFeatures(dense=F.normalize(smooth, dim=1), stride=features.stride)
        return out, {"norm": norm, "background": background}


def _probe_logits(head, dense, embeds):
    """The head's formula written out per pixel."""
    w = head.proj.detach()
    b, _, h, wd = dense.shape
    out = torch.empty(b, embeds.shape[0], h, wd)
    for n in range(embeds.shape[0]):
        out[:, n] = torch.einsum("bdhw,d->bhw", dense, w.T @ embeds[n]) + head.bias[n % 3]
    return out


def test_registration_sets_the_name_and_lists_the_head():
    assert LinearProbeHead.name == "test_linear_probe" and CosineSegHead.name == "cosine"
    assert SmoothRefiner.name == "test_smooth" and CLIPDINOiserRefiner.name == "clip_dinoiser"
    assert {"cosine", "test_linear_probe"} <= set(list_seg_heads())
    with pytest.raises(KeyError, match="Did you mean 'test_linear_probe'"):
        SEG_HEADS.get("test_linear_prob")


@torch.no_grad()
def test_toy_head_whole_image_equals_direct_computation(tiny_clip):
    seg = TrainingFreeSegmentor(
        tiny_clip,
        "maskclip",
        templates="single",
        short_side=None,
        window=None,
        logit_scale=20.0,
        head="test_linear_probe",
        head_kwargs={"seed": 3},
    )
    assert isinstance(seg.head, LinearProbeHead)
    torch.manual_seed(0)
    image = torch.rand(2, 3, 40, 56)
    vocab = ["background", "cat", "sofa, couch"]
    out = seg(image, vocab)
    dense = seg.backbone(seg.backbone.normalize(image)).dense
    emb = seg.encode_text(vocab).embeds
    logits = _probe_logits(LinearProbeHead(seed=3), dense, emb)
    logits = F.interpolate(logits, size=(40, 56), mode="bilinear")
    p = torch.softmax(20.0 * logits, dim=1)
    probs = torch.stack([p[:, 0], p[:, 1], torch.maximum(p[:, 2], p[:, 3])], dim=1)
    torch.testing.assert_close(out.probs, probs, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.labels, probs.argmax(1))
    assert len(out.labels.unique()) > 1
    # the cosine head would give other maps: the slot is really used
    cos = TrainingFreeSegmentor(
        tiny_clip, "maskclip", templates="single", short_side=None, window=None, logit_scale=20.0
    )
    assert not torch.allclose(cos(image, vocab).probs, out.probs, atol=1e-3)


@torch.no_grad()
def test_toy_head_from_a_config_with_sliding_windows(tiny_clip_config, tmp_path):
    """A config selecting the head by name: windows stitched as mmseg's slide_inference."""
    cfg_file = tmp_path / "probe.py"
    cfg_file.write_text(
        "from ovdense.config import LazyCall as L\n"
        "from ovdense.modeling.clip import load_clip\n"
        "from ovdense.modeling.segmentors import TrainingFreeSegmentor\n"
        "model = L(TrainingFreeSegmentor)(\n"
        f"    clip=L(load_clip)(config={tiny_clip_config!r}, seed=0),\n"
        "    strategy='sclip', templates='single', short_side=48, window=32, stride=16,\n"
        "    window_batch_size=3, head='test_linear_probe', head_kwargs={'seed': 1},\n"
        ")\n"
    )
    seg = instantiate(LazyConfig.load(str(cfg_file)).model)
    torch.manual_seed(1)
    image = torch.rand(1, 3, 45, 70)
    text = seg.encode_text(["a", "b", "c"])
    feats = seg.encode_image(image)
    assert len(feats.windows) == 8
    got = seg.name_logits(feats, text)
    # reference: one backbone call per window, the head's formula, pad-and-add, resize
    x = seg.backbone.normalize(F.interpolate(image, size=feats.resized_size, mode="bilinear"))
    hr, wr = feats.resized_size
    acc = torch.zeros(1, 3, hr, wr)
    count = torch.zeros(1, 1, hr, wr)
    probe = LinearProbeHead(seed=1)
    for y1, y2, x1, x2 in feats.windows:
        dense = seg.backbone(x[:, :, y1:y2, x1:x2]).dense
        up = F.interpolate(
            _probe_logits(probe, dense, text.embeds), size=(y2 - y1, x2 - x1), mode="bilinear"
        )
        acc += F.pad(up, (x1, wr - x2, y1, hr - y2))
        count[:, :, y1:y2, x1:x2] += 1
    want = F.interpolate(acc / count, size=(45, 70), mode="bilinear")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_head_with_a_wrong_output_is_named(tiny_clip):
    class Flat(nn.Module):
        def forward(self, dense, embeds):
            return torch.einsum("bdhw,nd->bn", dense, embeds)

    seg = TrainingFreeSegmentor(
        tiny_clip, templates="single", short_side=None, window=None, head=Flat()
    )
    with pytest.raises(ValueError, match=r"head Flat returned \(1, 2\)"):
        seg(torch.rand(1, 3, 32, 32), ["a", "b"])
    with pytest.raises(KeyError, match="cosine"):
        TrainingFreeSegmentor(tiny_clip, head="no_such_head")
    with pytest.raises(TypeError, match="head_kwargs"):
        TrainingFreeSegmentor(tiny_clip, head=Flat(), head_kwargs={"x": 1})


@torch.no_grad()
def test_segmentor_from_parts_equals_the_builder(tiny_clip):
    kw = dict(short_side=40, window=32, stride=16, logit_scale=30.0)
    parts = Segmentor(
        backbone=dense_backbone_for(tiny_clip, strategy="naclip", pos_interp="scale_factor"),
        text_encoder=TextEncoder(tiny_clip, templates="single"),
        head=CosineSegHead(),
        **kw,
    )
    built = TrainingFreeSegmentor(
        tiny_clip, "naclip", pos_interp="scale_factor", templates="single", **kw
    )
    image = torch.rand(1, 3, 37, 50, generator=torch.Generator().manual_seed(2))
    a, b = parts(image, ["x", "y, z"]), built(image, ["x", "y, z"])
    assert torch.equal(a.labels, b.labels) and torch.equal(a.probs, b.probs)


@torch.no_grad()
def test_toy_refiner_features_and_aux_maps(tiny_clip):
    seg = TrainingFreeSegmentor(
        tiny_clip,
        "maskclip",
        templates="single",
        short_side=40,
        window=32,
        stride=16,
        refiner="test_smooth",
    )
    torch.manual_seed(3)
    image = torch.rand(2, 3, 40, 56)
    feats = seg.encode_image(image)
    assert set(feats.aux) == {"norm", "background"}
    n = len(feats.windows) * 2
    assert feats.dense.shape[0] == n and feats.aux["norm"].shape == (n, 1, 4, 4)
    # per window: the backbone, then the refiner
    x = seg.backbone.normalize(F.interpolate(image, size=feats.resized_size, mode="bilinear"))
    crops = torch.cat([x[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in feats.windows])
    want, aux = SmoothRefiner()(seg.backbone(crops), crops)
    again, aux_again = seg.forward_features(crops)
    assert torch.equal(again.dense, want.dense) and torch.equal(aux_again["norm"], aux["norm"])
    torch.testing.assert_close(feats.dense, want.dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats.aux["norm"], aux["norm"], atol=1e-5, rtol=1e-5)
    # auxiliary maps are stitched like the logits
    stitched = seg.aux_map(feats, "norm")
    assert stitched.shape == (2, 1, 40, 56)
    torch.testing.assert_close(stitched, seg.merge_windows(feats.aux["norm"], feats))
    with pytest.raises(KeyError, match="norm"):
        seg.aux_map(feats, "saliency")


@pytest.mark.parametrize("order", ["ovdense", "paper"])
@torch.no_grad()
def test_saliency_rule_with_any_refiner(tiny_clip, order):
    """The background rule reads the refiner's "background" map, whatever the refiner."""
    kw = dict(short_side=40, window=32, stride=16, logit_scale=5.0)
    seg = Segmentor(
        backbone=dense_backbone_for(tiny_clip, strategy="maskclip"),
        text_encoder=TextEncoder(tiny_clip, templates="single"),
        refiner=SmoothRefiner(saliency=0.0),  # nothing salient
        saliency_rule=SaliencyRule(delta=0.99),
        decode_order=order,
        **kw,
    )
    image = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(4))
    out = seg(image, ["background", "cat", "dog"])
    assert (out.labels == 0).all()  # softmax(5 cos) never reaches 0.99
    rule, seg.saliency_rule = seg.saliency_rule, None
    without = {v: seg(image, v).labels for v in (("cat", "dog"), ("background", "cat", "dog"))}
    seg.saliency_rule = rule
    # no background class: the rule is off (auto)
    assert torch.equal(seg(image, ["cat", "dog"]).labels, without[("cat", "dog")])
    seg.background_rule = False
    off = seg(image, ["background", "cat", "dog"])
    assert torch.equal(off.labels, without[("background", "cat", "dog")])
    assert (off.labels != 0).any()
    seg.refiner.saliency = 1.0  # everything salient: the rule never fires
    seg.background_rule = None
    assert torch.equal(seg(image, ["background", "cat", "dog"]).labels, off.labels)


def test_stitch_windows_against_pad_and_add():
    torch.manual_seed(5)
    windows = [(0, 24, 0, 24), (0, 24, 16, 40), (6, 30, 0, 24), (6, 30, 16, 40)]
    b, k = 2, 3
    maps = torch.randn(len(windows) * b, k, 5, 5)
    got = stitch_windows(maps, windows, b, (30, 40), output_size=(45, 50), chunk=3)
    acc = torch.zeros(b, k, 30, 40)
    count = torch.zeros(1, 1, 30, 40)
    for w, (y1, y2, x1, x2) in enumerate(windows):
        for i in range(b):
            up = F.interpolate(maps[w * b + i : w * b + i + 1], size=(24, 24), mode="bilinear")
            acc[i : i + 1] += F.pad(up, (x1, 40 - x2, y1, 30 - y2))
        count[:, :, y1:y2, x1:x2] += 1
    want = F.interpolate(acc / count, size=(45, 50), mode="bilinear")
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    same = stitch_windows(maps, windows, b, (30, 40))
    assert same.shape == (b, k, 30, 40)
    with pytest.raises(ValueError, match="window maps"):
        stitch_windows(maps[:-1], windows, b, (30, 40))


# constructor arguments that make a registered head tiny (heads sized by default for real CLIPs)
TINY_HEAD_KWARGS = {
    "catseg": {
        "embed_dim": EMBED,
        "intermediate_dim": 64,
        "intermediate_layers": (0, 1),
        "num_templates": 1,
        "hidden_dim": 16,
        "window_size": 2,
        "guidance_dim": 8,
        "decoder_dims": (16, 16),
        "decoder_guidance_dims": (8, 8),
        "decoder_guidance_proj_dims": (4, 4),
        "class_chunk": 2,
    },
    "test_linear_probe": {"dim": EMBED},
}


@pytest.mark.parametrize("name", list_seg_heads())
def test_every_registered_head_runs_in_the_slot(tiny_clip, name):
    """The registry's contract for every head, read from the registry: built by name, mounted
    in a segmentor (which provides what the head declares), one score map per name at the
    feature resolution or a whole multiple of it, probabilities in [0, 1] (max over a class's
    names of the softmax over names)."""
    seg = TrainingFreeSegmentor(
        tiny_clip,
        templates="single",
        head=name,
        head_kwargs=TINY_HEAD_KWARGS.get(name, {}),
        short_side=40,
        window=32,
        stride=16,
        logit_scale=1.0,
    )
    vocab = ["red circle", "blue square|blue box", "sky"]
    img = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    feats = seg.encode_image(img)
    text = seg.encode_text(vocab)
    scores = seg.window_logits(feats, text)
    assert scores.shape == (2, 4, *feats.resized_size)  # four names
    out = seg.decode(feats, text)
    assert out.labels.shape == (2, 40, 48) and out.probs is not None
    assert torch.isfinite(out.probs).all()
    assert out.probs.min() >= 0 and out.probs.max() <= 1 and out.probs.sum(1).min() > 0.3
