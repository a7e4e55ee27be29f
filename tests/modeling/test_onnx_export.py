"""ONNX export (issue #16 item 3), checked with ONNX Runtime on the CPU: a fixed-vocabulary
segmentor (equal labels, logits within 1e-4 of eager) and the dense backbone with the vocabulary
as an input (dynamic batch, number of names and image size)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from tiny_strategies import tiny_strategy_kwargs  # noqa: E402

from ovdense.modeling.backbones import build_strategy  # noqa: E402
from ovdense.modeling.onnx_export import (
    DYNAMIC_SIZE_STRATEGIES,
    TextConditionedBackbone,  # noqa: E402
    check_exportable,
    dynamic_size_supported,
    export_backbone_onnx,
    export_segmentor_onnx,
    run_onnx,
)
from ovdense.modeling.refiners import PAMR  # noqa: E402
from ovdense.modeling.segmentors import TrainingFreeSegmentor  # noqa: E402

VOCAB = ["background", "cat, kitty", "dog", "sky", "grass, lawn"]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("strategy,prob_thd", [("naclip", 0.3)])
def test_fixed_vocabulary_segmentor_equals_eager(tiny_clip, tmp_path, strategy, prob_thd):
    seg = TrainingFreeSegmentor(
        tiny_clip, strategy, templates="single", short_side=40, window=32, stride=16
    )
    size = (45, 61)  # resized to 40 x 54, 2 x 3 windows
    path, model = export_segmentor_onnx(seg, VOCAB, size, tmp_path / "seg.onnx", 2, prob_thd)
    torch.manual_seed(0)
    images = F.interpolate(torch.rand(2, 3, 5, 7), size=size, mode="nearest")
    out, _ = run_onnx(path, {"images": images})
    feats, text = seg.encode_image(images), seg.encode_text(VOCAB)
    eager = seg.decode(feats, text, prob_thd=prob_thd)
    logits = seg.name_logits(feats, text) * seg.logit_scale
    assert out["logits"].shape == tuple(logits.shape)
    assert abs(out["logits"] - logits.numpy()).max() <= 1e-4
    assert (out["labels"] == eager.labels.numpy()).all()
    assert len(set(out["labels"].ravel().tolist())) > 1


@pytest.mark.parametrize("pos_interp", ["size", "scale_factor"])
def test_backbone_with_vocabulary_input(tiny_clip, tmp_path, pos_interp):
    """Batch, names and image size dynamic: sizes other than the export's (one not a multiple
    of the patch; one the native 4 x 4 grid, where the position embedding is not resized), at
    both position-embedding interpolations."""
    seg = TrainingFreeSegmentor(tiny_clip, "naclip", templates="single", pos_interp=pos_interp)
    path, model = export_backbone_onnx(seg, (32, 48), tmp_path / "backbone.onnx")
    session = None
    for batch, names, (h, w) in [(1, 2, (40, 56)), (3, 7, (27, 75)), (2, 3, (32, 32))]:
        images = torch.randn(batch, 3, h, w)
        embeds = seg.encode_text([f"thing {i}" for i in range(names)]).embeds
        feeds = {"images": images, "text_embeds": embeds}
        if session is None:
            out, session = run_onnx(path, feeds)
            scores = out["scores"]
        else:
            scores = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
        with torch.no_grad():
            ref = model(images, embeds)
        assert scores.shape == (batch, names, h // 8, w // 8)
        assert abs(scores - ref.numpy()).max() <= 1e-5


def test_what_the_graph_cannot_hold_is_refused(tiny_clip):
    seg = TrainingFreeSegmentor(tiny_clip, "naclip", templates="single", pamr=PAMR(3, (1, 2)))
    with pytest.raises(ValueError, match="PAMR"):
        check_exportable(seg)
    seg = TrainingFreeSegmentor(tiny_clip, "naclip", templates="single", area_thd=0.1)
    with pytest.raises(ValueError, match="area_thd"):
        check_exportable(seg)
    strategy = build_strategy("corrclip", **tiny_strategy_kwargs("corrclip"))
    seg = TrainingFreeSegmentor(tiny_clip, strategy, templates="single")
    with pytest.raises(ValueError, match="'corrclip' cannot be exported: its mask merging"):
        check_exportable(seg)
    with pytest.raises(ValueError, match="'corrclip' cannot be exported"):
        TextConditionedBackbone(seg)


def test_fixed_vocabulary_dynamic_size(tiny_clip, tmp_path):
    """Without resize and windows the fixed-vocabulary graph takes any size."""
    seg = TrainingFreeSegmentor(
        tiny_clip, "sclip", templates="single", short_side=None, window=None, prob_thd=0.2
    )
    assert dynamic_size_supported(seg) and "sclip" in DYNAMIC_SIZE_STRATEGIES
    path, _ = export_segmentor_onnx(seg, VOCAB, (32, 40), tmp_path / "seg.onnx")
    text = seg.encode_text(VOCAB)
    session = None
    for h, w in [(48, 40), (30, 70)]:
        images = torch.rand(1, 3, h, w)
        if session is None:
            out, session = run_onnx(path, {"images": images})
            logits, labels = out["logits"], out["labels"]
        else:
            logits, labels = session.run(None, {"images": images.numpy()})
        feats = seg.encode_image(images)
        ref = seg.name_logits(feats, text) * seg.logit_scale
        assert logits.shape == tuple(ref.shape) == (1, 7, h, w)  # 7 names
        assert abs(logits - ref.numpy()).max() <= 1e-4
        assert (labels == seg.decode(feats, text).labels.numpy()).all()


def test_dynamic_size_refused_with_windows(tiny_clip, tmp_path):
    seg = TrainingFreeSegmentor(tiny_clip, "naclip", templates="single", window=32, stride=16)
    assert not dynamic_size_supported(seg)
    with pytest.raises(ValueError, match="window=None"):
        export_segmentor_onnx(seg, VOCAB, (32, 32), tmp_path / "x.onnx", dynamic_size=True)
