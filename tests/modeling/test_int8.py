"""``precision="int8"``: dynamic int8 quantization of the backbone's linear layers on the CPU
(``ovdense.modeling.quantization``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ovdense.modeling.quantization import (
    INT8_BACKENDS,
    int8_backend,
    quantize_int8,
    quantized_linear_count,
)
from ovdense.modeling.segmentors import TrainingFreeSegmentor
from ovdense.modeling.segmentors.base import PRECISIONS

VOCAB = ["background", "cat", "dog", "sky", "grass"]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 32)).eval()


def _available_backends() -> list[str]:
    out = []
    for b in ("torchao", "torch.ao"):
        try:
            int8_backend(b)
        except ImportError:
            continue
        out.append(b)
    return out


@pytest.mark.parametrize("backend", _available_backends())
def test_quantize_int8_linear_layers(backend):
    mlp = _mlp()
    x = torch.randn(50, 64)
    with torch.no_grad():
        ref = mlp(x)
        q, used = quantize_int8(mlp, backend)
        out = q(x)
    assert used == backend
    assert quantized_linear_count(q) == (2, 0)
    assert quantized_linear_count(mlp) == (0, 2)  # the original is left as it was
    # int8 weights (127 levels per output channel) and int8 activations: close, not equal
    # (0.02-0.03 with either backend here)
    err = (out - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.05


def test_backend_names_and_device_are_checked():
    assert INT8_BACKENDS == ("auto", "torchao", "torch.ao")
    with pytest.raises(ValueError, match="expected one of"):
        int8_backend("fbgemm")
    with pytest.raises(ValueError, match="CPU only"):
        quantize_int8(_mlp().to("meta"))


def test_segmentor_int8_agrees_with_fp32(tiny_clip):
    kw = dict(templates="single", short_side=40, window=32, stride=16)
    fp32 = TrainingFreeSegmentor(tiny_clip, "naclip", **kw)
    int8 = TrainingFreeSegmentor(tiny_clip, "naclip", precision="int8", **kw)
    assert "int8" in PRECISIONS
    torch.manual_seed(0)
    images = torch.nn.functional.interpolate(torch.rand(2, 3, 6, 8), size=(45, 61))
    a = fp32.decode(fp32.encode_image(images), fp32.encode_text(VOCAB))
    b = int8.decode(int8.encode_image(images), int8.encode_text(VOCAB))
    assert len(set(a.labels.unique().tolist())) > 1
    assert (a.labels == b.labels).float().mean() > 0.9
    diff = (a.probs - b.probs).abs().max()
    assert 0 < diff < 0.2
    key, quantized, backend = int8._int8_cache
    assert backend in ("torchao", "torch.ao")
    # 3 blocks x (c_fc, c_proj) in int8; the attention output projections stay float
    assert quantized_linear_count(quantized) == (6, 3)
    # the shared CLIP tower and the segmentor's state stay float32
    assert quantized_linear_count(tiny_clip.visual) == (0, 9)
    assert set(int8.state_dict()) == set(fp32.state_dict())


def test_int8_copy_follows_the_weights(tiny_clip_factory):
    clip = tiny_clip_factory(seed=3)
    seg = TrainingFreeSegmentor(clip, "maskclip", templates="single", precision="int8")
    images = torch.rand(1, 3, 32, 32)
    first = seg.encode_image(images).dense
    assert seg.image_backbone() is seg.image_backbone()  # made once
    other = tiny_clip_factory(seed=4)
    seg.backbone.visual.load_state_dict(other.visual.state_dict())
    again = seg.encode_image(images).dense
    ref = TrainingFreeSegmentor(other, "maskclip", templates="single").encode_image(images).dense
    assert not torch.allclose(first, again)
    assert (again - ref).abs().max() < 0.1 * ref.abs().max()


def test_int8_refuses_gpu_and_training(tiny_clip, tiny_clip_factory):
    seg = TrainingFreeSegmentor(tiny_clip, "naclip", templates="single", precision="int8")
    seg.train()
    with pytest.raises(RuntimeError, match="inference"):
        seg.image_backbone()
    seg.eval()
    own = tiny_clip_factory(seed=5)  # moved in place below: not the shared model
    meta = TrainingFreeSegmentor(own, "naclip", templates="single", precision="int8")
    meta.backbone.to("meta")  # stands for a GPU: any device but the CPU
    with pytest.raises(ValueError, match="CPU only"):
        meta._autocast()
    with pytest.raises(ValueError, match="int8"):
        TrainingFreeSegmentor(tiny_clip, "naclip", precision="int4")
