"""The open-vocabulary box classifier, F-ViT's ensemble and the simple pyramid: values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovdense.modeling.detection import (
    SimpleFeaturePyramid,
    TextBoxPredictor,
    TextEmbeddingClassifier,
    class_embedding_matrix,
    clip_region_probs,
    geometric_ensemble,
)
from ovdense.modeling.text import ClassEmbeddings, Vocabulary


def test_classifier_is_scaled_cosine_with_background_first():
    torch.manual_seed(0)
    bg = torch.randn(8)
    clf = TextEmbeddingClassifier(8, in_features=5, temperature=20.0, background_embed=bg)
    x, emb = torch.randn(4, 5), torch.randn(3, 8)
    logits = clf(x, emb)
    proj = clf.proj(x)
    for n in range(4):
        for k in range(4):
            w = bg if k == 0 else emb[k - 1]
            expected = 20.0 * F.cosine_similarity(proj[n], w, dim=0)
            assert logits[n, k].item() == pytest.approx(expected.item(), abs=1e-5)
    # learnable temperature and background; a fixed one is a buffer
    assert {n for n, _ in clf.named_parameters()} >= {"temperature", "background"}
    fixed = TextEmbeddingClassifier(8, learn_temperature=False, learn_background=False)
    assert [n for n, _ in fixed.named_parameters()] == []
    with pytest.raises(ValueError, match="dims"):
        clf(x, torch.randn(3, 7))


def test_synonyms_are_averaged():
    e = F.normalize(torch.randn(3, 4), dim=1)
    vocab = Vocabulary(["cat", "sofa|couch"])
    ce = ClassEmbeddings(e, vocab.name_to_class(), vocab)
    m = class_embedding_matrix(ce)
    assert torch.allclose(m[0], e[0], atol=1e-6)
    assert torch.allclose(m[1], F.normalize(e[1] + e[2], dim=0), atol=1e-6)


def test_ensemble_equals_the_formula():
    torch.manual_seed(1)
    det = torch.rand(5, 4).softmax(-1)
    clip = torch.rand(5, 4).softmax(-1)
    is_base = torch.tensor([True, False, True])
    out = geometric_ensemble(det, clip, is_base, alpha=0.1, beta=0.8)
    for n in range(5):
        for k in range(4):
            w = 0.1 if k == 0 or bool(is_base[k - 1]) else 0.8  # background counts as base
            expected = det[n, k] ** (1 - w) * clip[n, k] ** w
            assert out[n, k].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="1 \\+ K"):
        geometric_ensemble(det, clip, torch.tensor([True]))


def test_clip_region_probs_is_tempered_softmax():
    feats, w = torch.randn(2, 6), F.normalize(torch.randn(4, 6), dim=1)
    p = clip_region_probs(feats * 3.0, w, temperature=75.0)
    cos = F.normalize(feats, dim=1) @ w.T
    assert torch.allclose(p, (75.0 * cos).softmax(-1), atol=1e-6)
    assert torch.allclose(p.sum(-1), torch.ones(2))


def test_box_predictor_contract():
    pred = TextBoxPredictor(16, 8)
    x = torch.randn(5, 16, 1, 1)
    with pytest.raises(RuntimeError, match="set_vocabulary"):
        pred(x)
    emb = torch.randn(3, 8)
    pred.set_vocabulary(emb)
    logits, deltas = pred(x)
    assert logits.shape == (5, 4) and deltas.shape == (5, 16)
    # class-agnostic: every column holds the same deltas
    assert torch.equal(deltas.view(5, 4, 4), deltas[:, :4, None].transpose(1, 2).expand(5, 4, 4))
    with pred.vocabulary(torch.randn(6, 8)):
        assert pred(x)[0].shape == (5, 7)
    assert pred(x)[0].shape == (5, 4)  # restored


def test_pyramid_strides_and_shapes():
    pyr = SimpleFeaturePyramid(12, 8, norm=False)
    maps = [torch.randn(2, 12, 4, 6) for _ in range(4)]
    out = pyr(maps)
    assert list(out) == ["0", "1", "2", "3", "pool"]
    assert [tuple(v.shape[-2:]) for v in out.values()] == [
        (16, 24),
        (8, 12),
        (4, 6),
        (2, 3),
        (1, 2),
    ]
    assert pyr.strides(16) == [4, 8, 16, 32, 64]
    three = SimpleFeaturePyramid(12, 8, scales=(2.0, 1.0, 0.5))
    assert three.strides(8) == [4, 8, 16, 32]
    with pytest.raises(ValueError, match="scales"):
        SimpleFeaturePyramid(12, 8, scales=(3.0,))
    assert all(torch.isfinite(v).all() for v in out.values())
