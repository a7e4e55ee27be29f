"""Contrastive CLIP training (ovdense.modeling.contrastive)."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ovdense.modeling.contrastive import ContrastiveCLIP, clip_contrastive_loss

OPENAI_MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
OPENAI_STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
CAPTIONS = ["a red circle.", "a photo of a blue square.", "an orange star.", "a green cross."]


def _explicit_loss(image: torch.Tensor, text: torch.Tensor, scale: float) -> float:
    n = image.shape[0]
    sims = [[scale * float(image[i] @ text[j]) for j in range(n)] for i in range(n)]
    i2t = t2i = 0.0
    for i in range(n):
        row = sims[i]
        col = [sims[j][i] for j in range(n)]
        i2t -= row[i] - math.log(sum(math.exp(v) for v in row))
        t2i -= col[i] - math.log(sum(math.exp(v) for v in col))
    return (i2t / n + t2i / n) / 2


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(4, 3, 32, 32, generator=g), "caption": list(CAPTIONS)}


def test_loss_matches_formula():
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=-1)
    for scale in (1.0, 14.3, 100.0):
        loss = clip_contrastive_loss(image, text, torch.tensor(scale, dtype=torch.float64))
        assert float(loss) == pytest.approx(_explicit_loss(image, text, scale), rel=1e-9)
    # asymmetric case: swapping image and text gives the same symmetric loss
    s = torch.tensor(3.0, dtype=torch.float64)
    assert float(clip_contrastive_loss(image, text, s)) == pytest.approx(
        float(clip_contrastive_loss(text, image, s)), rel=1e-12
    )
    # perfectly aligned, well separated pairs: loss near 0
    eye = torch.eye(4, dtype=torch.float64)
    assert float(clip_contrastive_loss(eye, eye, torch.tensor(100.0))) < 1e-10


def test_forward_matches_hand_computation(tiny_clip_factory):
    clip = tiny_clip_factory(seed=1)
    model = ContrastiveCLIP(clip).eval()
    batch = _batch()
    with torch.no_grad():
        loss = model(batch)["loss_contrastive"]
        tokens = clip.ovdense_tokenizer(CAPTIONS)
        img = F.normalize(clip.encode_image((batch["image"] - OPENAI_MEAN) / OPENAI_STD), dim=-1)
        txt = F.normalize(clip.encode_text(tokens), dim=-1)
    scale = float(clip.logit_scale.exp())
    assert scale == pytest.approx(1 / 0.07, rel=1e-5)  # open_clip's init, not clamped
    assert float(loss) == pytest.approx(_explicit_loss(img.double(), txt.double(), scale), rel=1e-4)
    assert loss.ndim == 0
    with pytest.raises(ValueError, match="captions"):
        model({"image": batch["image"], "caption": CAPTIONS[:3]})


def test_logit_scale_clamped(tiny_clip_factory):
    clip = tiny_clip_factory(seed=2)
    model = ContrastiveCLIP(clip)
    with torch.no_grad():
        clip.logit_scale.fill_(7.0)
    batch = _batch(1)
    with torch.no_grad():
        loss = model(batch)["loss_contrastive"]
    assert float(clip.logit_scale) == pytest.approx(math.log(100.0), rel=1e-6)
    with torch.no_grad():
        img = F.normalize(clip.encode_image((batch["image"] - OPENAI_MEAN) / OPENAI_STD), dim=-1)
        txt = F.normalize(clip.encode_text(clip.ovdense_tokenizer(CAPTIONS)), dim=-1)
    assert float(loss) == pytest.approx(_explicit_loss(img.double(), txt.double(), 100.0), rel=1e-4)
    with torch.no_grad():
        clip.logit_scale.fill_(-1.0)
        model(batch)
    assert float(clip.logit_scale) == 0.0
    small = ContrastiveCLIP(clip, max_logit_scale=10.0)
    with torch.no_grad():
        clip.logit_scale.fill_(5.0)
        small(batch)
    assert float(clip.logit_scale) == pytest.approx(math.log(10.0), rel=1e-6)


def test_training_lowers_loss(tiny_clip_factory):
    torch.manual_seed(0)
    clip = tiny_clip_factory(seed=3)
    model = ContrastiveCLIP(clip).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = _batch(2)
    losses = []
    for _ in range(2):
        loss = model(batch)["loss_contrastive"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert clip.logit_scale.grad is not None
    assert clip.visual.conv1.weight.grad is not None
    with torch.no_grad():
        final = float(model(batch)["loss_contrastive"])
    assert final < losses[1] < losses[0], (losses, final)
    assert final < losses[0] - 0.1, (losses, final)


def test_save_open_clip_checkpoint_fp16(tiny_clip_factory, tiny_clip_config, tmp_path):
    clip = tiny_clip_factory(seed=4)
    model = ContrastiveCLIP(clip)
    path = model.save_open_clip_checkpoint(tmp_path / "sub" / "tiny.pt", dtype=torch.float16)
    assert path == tmp_path / "sub" / "tiny.pt" and path.is_file()
    state = torch.load(path, weights_only=True)
    assert set(state) == set(clip.state_dict())
    assert not any(k.startswith("clip.") for k in state)  # open_clip keys, not the wrapper's
    for k, v in state.items():
        ref = clip.state_dict()[k]
        if ref.is_floating_point():
            assert v.dtype == torch.float16, k
            torch.testing.assert_close(v.float(), ref.half().float(), rtol=0, atol=0)
        else:
            assert v.dtype == ref.dtype and torch.equal(v, ref), k
    assert not any(k in ("mean", "std") for k in state)

    fresh = open_clip.CLIP(**tiny_clip_config)
    fresh.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    fresh.eval()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = clip.ovdense_tokenizer(["a red circle.", "a blue square."])
    with torch.no_grad():
        a = F.normalize(clip.encode_image(images), dim=-1)
        b = F.normalize(fresh.encode_image(images), dim=-1)
        ta = F.normalize(clip.encode_text(tokens), dim=-1)
        tb = F.normalize(fresh.encode_text(tokens), dim=-1)
    torch.testing.assert_close(a, b, atol=2e-2, rtol=0)
    torch.testing.assert_close(ta, tb, atol=2e-2, rtol=0)
    assert float((a * b).sum(-1).min()) > 0.999

    # default: full precision, exact
    path32 = model.save_open_clip_checkpoint(tmp_path / "tiny32.pt")
    state32 = torch.load(path32, weights_only=True)
    for k, v in clip.state_dict().items():
        assert torch.equal(state32[k], v), k


def test_needs_ovdense_model():
    with pytest.raises(TypeError, match="load_clip"):
        ContrastiveCLIP(nn.Linear(2, 2))
