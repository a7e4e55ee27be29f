"""Evaluation presets: each paper's per-benchmark settings and the unified protocol."""

import pytest

from ovdense.evaluation.runner import method_name, resolve_eval_config


def test_method_name():
    assert method_name("naclip") == "naclip"
    assert method_name("seg/sclip_vitb16") == "sclip"
    assert method_name("/some/where/my_config.py") == "my_config"


def test_paper_protocol_per_benchmark():
    cfg = resolve_eval_config("naclip", "voc21")
    assert cfg.class_rule == "naclip" and cfg.model.strategy == "naclip"
    assert cfg.model.window is None and cfg.model.prob_thd == 0.1
    assert cfg.model.pamr is not None
    city = resolve_eval_config("naclip", "cityscapes")
    assert city.model.short_side == 560 and city.model.window == 224
    sclip = resolve_eval_config("sclip", "voc21")
    assert (sclip.model.logit_scale, sclip.model.prob_thd, sclip.model.area_thd) == (65, 0.1, 0.1)
    assert resolve_eval_config("sclip", "coco_stuff171").model.short_side == 448
    clear = resolve_eval_config("clearclip", "voc21")
    assert clear.class_rule == "clearclip" and clear.model.prob_thd == 0.5
    assert resolve_eval_config("clearclip", "ade20k_150").model.prob_thd == 0.0


def test_unified_protocol_keeps_only_the_strategy():
    for method in ("naclip", "sclip", "clearclip", "maskclip"):
        cfg = resolve_eval_config(method, "voc21", "unified")
        assert cfg.model.strategy == method and cfg.class_rule == "unified"
        assert (cfg.model.short_side, cfg.model.window, cfg.model.stride) == (336, 224, 112)
        assert cfg.model.logit_scale == 40.0 and cfg.model.pamr is None
        assert cfg.model.prob_thd == 0.0
    assert resolve_eval_config("naclip", "cityscapes", "unified").model.short_side == 560
    # NACLIP's Gaussian std is part of the strategy: kept
    assert resolve_eval_config("naclip", "voc21", "unified").model.strategy_kwargs.std == 5.0


def test_overrides_and_errors():
    cfg = resolve_eval_config("sclip", "voc21", overrides=["model.logit_scale=30"])
    assert cfg.model.logit_scale == 30
    with pytest.raises(ValueError, match="protocol"):
        resolve_eval_config("sclip", "voc21", "mine")
    with pytest.raises(KeyError, match="logit_scale"):
        resolve_eval_config("sclip", "voc21", overrides=["model.logit_scal=3"])
