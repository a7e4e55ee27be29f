"""``torch.export`` of the dense backbones (open_clip ViT and EVA02, every registered strategy) and
of a small fixed-vocabulary segmenter: the exported program gives the eager outputs.

The per-grid caches (position / rotary embeddings, NACLIP's bias) step aside while tracing, so a
frozen model whose caches are already filled still exports, the graph computes those tensors
from the parameters, and no tracer tensor is left in a cache.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_eva import make_eva
from tiny_strategies import TINY_STRATEGY_KWARGS
from torch import Tensor, nn

from ovdense.modeling.backbones import DenseFeatures, DenseTowerBackbone, dense_backbone_for
from ovdense.modeling.layers import is_tracing
from ovdense.modeling.strategies import build_strategy, list_strategies
from ovdense.modeling.vfm import build_vfm

SIZE = (40, 48)  # not the towers' native 32 x 32: interpolated position / rotary embeddings
TINY_DINO = {"img_size": 32, "embed_dim": 24, "depth": 2, "num_heads": 2}

# strategies whose defaults need downloaded weights: offline arguments (ProxyCLIP exports with
# its VFM inside the graph)
OFFLINE_STRATEGY_KWARGS = {
    "proxy": lambda: {"vfm": build_vfm("dino_vitb8", pretrained=False, **TINY_DINO)},
    **TINY_STRATEGY_KWARGS,
}


@pytest.fixture(scope="module")
def frozen_towers(tiny_clip_factory):
    return {
        "vit": tiny_clip_factory(seed=11).requires_grad_(False),
        "eva": make_eva(seed=12).requires_grad_(False),
    }


def _plain_tensors_only(cache: dict) -> bool:
    return all(v is None or type(v) is torch.Tensor for v in cache.values())


def _caches(backbone: DenseTowerBackbone) -> list[dict]:
    found = [backbone._pos_cache, getattr(backbone, "_rope_cache", {})]
    return [*found, getattr(backbone.strategy, "_cache", {})]


@pytest.mark.parametrize("name", list_strategies())
@pytest.mark.parametrize("tower", ["vit", "eva"])
def test_exported_backbone_equals_eager(frozen_towers, tower, name):
    strategy = build_strategy(name, **OFFLINE_STRATEGY_KWARGS.get(name, dict)())
    if strategy.not_exportable:  # declared; the ONNX tools refuse it (test_onnx_export.py)
        assert name == "corrclip"
        return
    backbone = dense_backbone_for(frozen_towers[tower], strategy).eval()
    images = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = backbone(images)  # fills the per-grid caches first
    program = torch.export.export(backbone, (images,))
    assert all(_plain_tensors_only(c) for c in _caches(backbone))

    out = program.module()(images)
    assert isinstance(out, DenseFeatures) and out.stride == eager.stride
    torch.testing.assert_close(out.dense, eager.dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.global_embed, eager.global_embed, atol=1e-5, rtol=1e-5)
    # the graph reads the position embedding from the parameter (no baked copy)
    targets = {s.target for s in program.graph_signature.input_specs}
    pos = "visual.positional_embedding" if tower == "vit" else "visual.trunk.pos_embed"
    assert pos in targets
    with torch.no_grad():  # eager still works (and caches) after the export
        again = backbone(images)
    torch.testing.assert_close(again.dense, eager.dense)


def test_exported_program_follows_new_weights(frozen_towers):
    """A different position embedding given to the exported program changes its output as it
    changes eager's: the interpolation is in the graph."""
    backbone = dense_backbone_for(frozen_towers["vit"], "naclip").eval()
    images = torch.randn(1, 3, *SIZE)
    program = torch.export.export(backbone, (images,))
    module = program.module()
    pe = frozen_towers["vit"].visual.positional_embedding
    new = pe + 0.5 * torch.randn_like(pe)
    with torch.no_grad():
        module.get_parameter("visual.positional_embedding").copy_(new)
        out = module(images)
        old = pe.clone()
        pe.copy_(new)
        try:
            eager = backbone(images)
        finally:
            pe.copy_(old)
    torch.testing.assert_close(out.dense, eager.dense, atol=1e-5, rtol=1e-5)


def test_is_tracing_only_while_tracing():
    seen = []

    class Probe(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            seen.append(is_tracing(x))
            return x + 1

    Probe()(torch.zeros(1))
    torch.export.export(Probe(), (torch.zeros(1),))
    assert seen == [False, True]


class FixedVocabularySegmenter(nn.Module):
    """What an exported segmentor needs, at one input size: backbone, the vocabulary's text
    embeddings as a buffer (encoded once, eagerly), cosine logits upsampled to the input.

    Args:
        backbone: a dense backbone.
        text_embeds: ``[N, D]`` class-name embeddings (normalised here).
        logit_scale: multiplies the cosine similarities.
    """

    def __init__(self, backbone: nn.Module, text_embeds: Tensor, logit_scale: float = 40.0):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("text_embeds", F.normalize(text_embeds, dim=-1))
        self.logit_scale = float(logit_scale)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``images [B, 3, H, W]`` (normalised) -> ``(probs [B, N, H, W], labels [B, H, W])``."""
        dense = self.backbone(images).dense  # [B, D, h, w], unit norm
        logits = torch.einsum("bdhw,nd->bnhw", dense, self.text_embeds) * self.logit_scale
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear")
        probs = logits.softmax(dim=1)
        return probs, probs.argmax(dim=1)


@pytest.mark.parametrize("tower", ["vit", "eva"])
def test_fixed_vocabulary_segmenter_exports(frozen_towers, tower):
    clip = frozen_towers[tower]
    names = ["cat", "dog", "sky", "grass"]
    import open_clip

    tokens = open_clip.get_tokenizer("ViT-B-16")(names)
    with torch.no_grad():
        text = clip.encode_text(tokens)
    model = FixedVocabularySegmenter(dense_backbone_for(clip, "sclip"), text).eval()
    images = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        probs, labels = model(images)
    program = torch.export.export(model, (images,))
    got_probs, got_labels = program.module()(images)
    assert got_probs.shape == (1, len(names), *SIZE) and got_labels.shape == (1, *SIZE)
    torch.testing.assert_close(got_probs, probs, atol=1e-5, rtol=1e-5)
    assert torch.equal(got_labels, labels)


def test_catseg_head_exports():
    """CAT-Seg's head (tensor in / tensor out) exports at a fixed vocabulary size; the program
    gives the eager logits (class chunks and the window masks are traced as constants)."""
    from test_catseg_head import inputs, tiny_head

    head = tiny_head(class_chunk=4)
    dense, embeds, inter = inputs()
    with torch.no_grad():
        want = head(dense, embeds, inter)
    program = torch.export.export(head, (dense, embeds, inter))
    with torch.no_grad():
        got = program.module()(dense, embeds, inter)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
