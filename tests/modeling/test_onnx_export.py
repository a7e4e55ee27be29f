"""ONNX export (issue #16 item 3), checked with ONNX Runtime on the CPU: a fixed-vocabulary
segmentor (equal labels, logits within 1e-4 of eager) and the dense backbone with the vocabulary
as an input (dynamic batch and number of names)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from ovdense.modeling.onnx_export import (  # noqa: E402
    check_exportable,
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


def test_backbone_with_vocabulary_input(tiny_clip, tmp_path):
    seg = TrainingFreeSegmentor(tiny_clip, "naclip", templates="single")
    path, model = export_backbone_onnx(seg, (32, 48), tmp_path / "backbone.onnx")
    session = None
    for batch, names in [(1, 2), (3, 7)]:
        images = torch.randn(batch, 3, 32, 48)
        embeds = seg.encode_text([f"thing {i}" for i in range(names)]).embeds
        feeds = {"images": images, "text_embeds": embeds}
        if session is None:
            out, session = run_onnx(path, feeds)
            scores = out["scores"]
        else:
            scores = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
        with torch.no_grad():
            ref = model(images, embeds)
        assert scores.shape == (batch, names, 4, 6)
        assert abs(scores - ref.numpy()).max() <= 1e-4


def test_what_the_graph_cannot_hold_is_refused(tiny_clip):
    seg = TrainingFreeSegmentor(tiny_clip, "naclip", templates="single", pamr=PAMR(3, (1, 2)))
    with pytest.raises(ValueError, match="PAMR"):
        check_exportable(seg)
    seg = TrainingFreeSegmentor(tiny_clip, "naclip", templates="single", area_thd=0.1)
    with pytest.raises(ValueError, match="area_thd"):
        check_exportable(seg)
