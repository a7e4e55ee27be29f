"""Method presets: each paper's settings, one-line builders, helpful errors."""

import pytest

from ovdense import build_segmentor, get_config, list_presets
from ovdense.config import LazyCall as L
from ovdense.config import instantiate
from ovdense.modeling.backbones.attention import (
    ClearCLIPAttention,
    MaskCLIPAttention,
    NACLIPAttention,
    SCLIPAttention,
)
from ovdense.modeling.clip import load_clip
from ovdense.modeling.refiners import PAMR

EXPECTED = {
    # strategy class, pos_interp, short side, window, stride, logit scale, PAMR, precision
    "maskclip": (MaskCLIPAttention, "size", 448, 448, 224, 100.0, False, "fp32"),
    "sclip": (SCLIPAttention, "scale_factor", 336, 224, 112, 40.0, False, "fp32"),
    "clearclip": (ClearCLIPAttention, "scale_factor", 448, 448, 224, 50.0, False, "auto"),
    "naclip": (NACLIPAttention, "scale_factor", 336, 224, 112, 40.0, True, "fp32"),
}


def test_presets_listed():
    names = list_presets()
    for alias in EXPECTED:
        assert alias in names and f"seg/{alias}_vitb16" in names
    assert not any("base" in n for n in names)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_settings(name, tiny_clip_config):
    cfg = get_config(name)
    assert cfg.model.clip.model_name == "ViT-B-16" and cfg.model.clip.pretrained == "openai"
    cfg.model.clip = L(load_clip)(config=tiny_clip_config)  # no download in tests
    seg = instantiate(cfg.model)
    cls, interp, short, window, stride, scale, pamr, precision = EXPECTED[name]
    assert type(seg.backbone.strategy) is cls
    assert seg.backbone.pos_interp == interp
    assert (seg.short_side, seg.window, seg.stride) == (short, window, stride)
    assert seg.logit_scale == scale and seg.precision == precision
    assert isinstance(seg.pamr, PAMR) if pamr else seg.pamr is None
    assert len(seg.text_encoder.templates) == 80
    if name == "naclip":
        assert seg.backbone.strategy.std == 5.0
        assert tuple(seg.pamr.dilations) == (8, 16) and seg.pamr.num_iter == 10


def test_base_is_not_changed_by_presets():
    get_config("naclip")
    assert get_config("sclip").model.pamr is None


def test_overrides_and_errors(tiny_clip_config):
    cfg = get_config("sclip", ["model.logit_scale=65", "model.prob_thd=0.1", "model.window=None"])
    assert cfg.model.logit_scale == 65 and cfg.model.prob_thd == 0.1 and cfg.model.window is None
    with pytest.raises(KeyError, match="logit_scale"):
        get_config("sclip", ["model.logit_scal=3"])
    with pytest.raises(KeyError, match="Did you mean 'naclip'"):
        get_config("naclp")
    with pytest.raises(KeyError, match="logit_scale"):
        build_segmentor("naclip", logit_scal=3)


def test_build_segmentor_with_overrides(tmp_path, tiny_clip_config):
    preset = tmp_path / "tiny.py"
    preset.write_text(
        "from ovdense.config import LazyCall as L\n"
        "from ovdense.modeling.clip import load_clip\n"
        "from ovdense.modeling.segmentors import TrainingFreeSegmentor\n"
        f"model = L(TrainingFreeSegmentor)(clip=L(load_clip)(config={tiny_clip_config!r}))\n"
    )
    seg = build_segmentor(
        preset,
        strategy="clearclip",
        window=None,
        device="cpu",
        overrides=["model.logit_scale=12.5"],
    )
    assert type(seg.backbone.strategy) is ClearCLIPAttention
    assert seg.window is None and seg.logit_scale == 12.5
