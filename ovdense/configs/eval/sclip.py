"""SCLIP's evaluation settings (Wang et al., ECCV 2024; docs/protocols.md#per-method-settings): the
method preset plus per-benchmark changes, class names split on ", " (synonyms max-pooled)."""

from ..seg.sclip_vitb16 import model  # noqa: F401 - the config this file extends

class_rule = "sclip"
benchmarks = {
    "voc21": {"logit_scale": 65.0, "prob_thd": 0.1, "area_thd": 0.1},
    "context60": {"logit_scale": 50.0},
    "coco_object": {"logit_scale": 50.0},
    "coco_stuff171": {"short_side": 448},
    "cityscapes": {"short_side": 560},
}
