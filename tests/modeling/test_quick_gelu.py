"""Presets build the activation their weights were trained with (QuickGELU for OpenAI's).

Random weights; the hub download is mocked (open_clip's ``download_pretrained`` /
``download_pretrained_from_hf`` return a local file). Reference: open_clip's own
``ViT-B-16-quickgelu`` with the same weights. By default the names ``ViT-B-16`` and
``ViT-B-16-quickgelu`` are pointed at a tiny architecture of the same kind (open_clip's real tag
table still decides); ``-m slow`` repeats every test with the real ViT-B/16.
"""

from __future__ import annotations

import json

import open_clip
import open_clip.factory
import pytest
import torch

import ovdense.modeling.clip.loading as clip_loading
from ovdense.config import LazyConfig, instantiate
from ovdense.model_zoo import clip_source_overrides, get_config
from ovdense.modeling.clip import load_clip, weights_need_quick_gelu

OPENAI_PRESETS = ["maskclip", "sclip", "clearclip", "naclip", "train/clipself_vitb16"]


def _activations(module: torch.nn.Module) -> set[str]:
    return {
        type(m).__name__
        for name, m in module.named_modules()
        if name.endswith(("mlp.gelu", "mlp.act"))
    }


@pytest.fixture(scope="module", params=["tiny", pytest.param("real", marks=pytest.mark.slow)])
def architecture(request, tiny_clip_config):
    """``"tiny"``: ViT-B-16(-quickgelu) name tiny configs while the module runs; ``"real"``."""
    if request.param == "real":
        yield "real"
        return
    saved = {k: open_clip.factory._MODEL_CONFIGS.get(k) for k in ("ViT-B-16", "ViT-B-16-quickgelu")}
    open_clip.factory._MODEL_CONFIGS["ViT-B-16"] = dict(tiny_clip_config)
    open_clip.factory._MODEL_CONFIGS["ViT-B-16-quickgelu"] = {
        **tiny_clip_config,
        "quick_gelu": True,
    }
    yield "tiny"
    open_clip.factory._MODEL_CONFIGS.update(saved)


@pytest.fixture(scope="module")
def openai_weights(architecture, tmp_path_factory):
    """Random ViT-B-16 weights saved as the 'openai' file, and the QuickGELU reference model."""
    torch.manual_seed(0)
    ref = open_clip.create_model("ViT-B-16-quickgelu").eval()
    path = tmp_path_factory.mktemp("weights") / "open_clip_pytorch_model.bin"
    torch.save(ref.state_dict(), path)
    return path, ref


@pytest.fixture()
def mocked_hub(monkeypatch, openai_weights):
    """Every tag 'downloads' the random file; no network is touched."""
    path, _ = openai_weights
    monkeypatch.setattr(clip_loading, "_check_weights_reachable", lambda *a, **k: None)
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda *a, **k: str(path))
    return path


def _same_outputs(model: torch.nn.Module, ref: torch.nn.Module) -> None:
    tokens = open_clip.tokenize(["a photo of a cat", "a red circle"])
    size = ref.visual.image_size
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens), ref.encode_text(tokens))
        torch.testing.assert_close(model.encode_image(image), ref.encode_image(image))


def test_tag_decides_the_activation():
    assert weights_need_quick_gelu("ViT-B-16", "openai")
    assert weights_need_quick_gelu("ViT-L-14-336", "openai")
    assert weights_need_quick_gelu("ViT-B-16-quickgelu", None)
    assert not weights_need_quick_gelu("ViT-B-16", "laion2b_s34b_b88k")
    assert not weights_need_quick_gelu("ViT-B-16", None)


@pytest.mark.parametrize("preset", OPENAI_PRESETS)
def test_openai_presets_build_quick_gelu(preset, mocked_hub, openai_weights):
    _, ref = openai_weights
    cfg = get_config(preset)
    assert cfg.model.clip.pretrained == "openai"
    clip = instantiate(cfg.model.clip)
    assert _activations(clip) == {"QuickGELU"}
    assert "qg=True" in clip.ovdense_id  # the text cache never mixes the two activations
    _same_outputs(clip, ref)


def test_offline_file_keeps_the_presets_architecture(openai_weights):
    """The README's offline line: build_segmentor("naclip", checkpoint=FILE)."""
    path, ref = openai_weights
    cfg = get_config("naclip")
    cfg = LazyConfig.apply_overrides(cfg, clip_source_overrides(checkpoint=path))
    clip = instantiate(cfg.model.clip)
    assert _activations(clip) == {"QuickGELU"}
    _same_outputs(clip, ref)
    # the whole segmentor: its dense backbone is the QuickGELU tower
    import ovdense

    seg = ovdense.build_segmentor("naclip", checkpoint=path, device="cpu")
    assert _activations(seg.backbone) == {"QuickGELU"}


def test_file_without_tag_needs_the_name_or_flag(openai_weights):
    path, ref = openai_weights
    gelu = load_clip("ViT-B-16", checkpoint=path)  # the user said: plain ViT-B-16
    assert _activations(gelu) == {"GELU"}
    for clip in (
        load_clip("ViT-B-16", checkpoint=path, quick_gelu=True),
        load_clip("ViT-B-16-quickgelu", checkpoint=path),
        load_clip("ViT-B-16", "openai", checkpoint=path),  # tag + file: no download
    ):
        assert _activations(clip) == {"QuickGELU"}
        _same_outputs(clip, ref)


def test_other_model_with_file_drops_the_presets_tag():
    assert clip_source_overrides(model="EVA02-B-16", checkpoint="f.pt") == [
        "model.clip.model_name='EVA02-B-16'",
        "model.clip.checkpoint='f.pt'",
        "model.clip.pretrained=None",
    ]
    assert clip_source_overrides(pretrained="laion2b_s34b_b88k") == [
        "model.clip.pretrained='laion2b_s34b_b88k'"
    ]


def test_laion_weights_stay_gelu(mocked_hub):
    clip = load_clip("ViT-B-16", "laion2b_s34b_b88k")
    assert _activations(clip) == {"GELU"}


def test_hf_hub_model_follows_its_config(monkeypatch, tmp_path, openai_weights):
    path, ref = openai_weights
    model_cfg = dict(open_clip.get_model_config("ViT-B-16-quickgelu"))
    assert model_cfg["quick_gelu"] is True
    config = tmp_path / "open_clip_config.json"
    config.write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))

    def fake_hf(model_id, filename=None, **kwargs):
        assert model_id == "timm/vit_base_patch16_clip_224.openai"
        return str(config) if filename and filename.endswith(".json") else str(path)

    monkeypatch.setattr(open_clip.factory, "download_pretrained_from_hf", fake_hf)
    clip = load_clip("hf-hub:timm/vit_base_patch16_clip_224.openai")
    assert _activations(clip) == {"QuickGELU"}
    _same_outputs(clip, ref)
