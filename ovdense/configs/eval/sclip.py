"""SCLIP's evaluation settings (Wang et al., ECCV 2024; docs/protocols.md#per-method-settings): the
method preset plus per-benchmark changes, class names split on ", " (synonyms max-pooled)."""

from ..seg.sclip_vitb16 import model  # noqa: F401 - the config this file extends
from .unified import suite  # noqa: F401 - the benchmarks eval-all runs

method = "sclip"
class_rule = "sclip"
benchmarks = {
    "voc21": {"logit_scale": 65.0, "prob_thd": 0.1, "area_thd": 0.1},
    "context60": {"logit_scale": 50.0, "prob_thd": 0.1},
    "coco_object": {"logit_scale": 50.0, "prob_thd": 0.1},
    "coco_stuff171": {"short_side": 448},
    "cityscapes": {"short_side": 560},
}

#: mIoU (%) published with the method's own settings, CLIP ViT-B/16, per benchmark of
#: ``suite`` (docs/results.md#training-free-ovss); ``ovdense eval-all`` prints them under
#: its own row in the paper protocol.
published = {
    "voc21": 59.63,
    "context60": 31.74,
    "coco_object": 33.52,
    "voc20": 81.54,
    "context59": 34.46,
    "coco_stuff171": 22.77,
    "cityscapes": 32.34,
    "ade20k_150": 16.45,
}
published_source = "SCLIP paper / repository"
