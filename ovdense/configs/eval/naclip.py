"""NACLIP's evaluation settings (Hajimiri et al., WACV 2025; docs/protocols.md#per-method-settings):
PAMR on, whole-image inference on VOC, background threshold 0.1 on the datasets with a background
class."""

from ..seg.naclip_vitb16 import model  # noqa: F401 - the config this file extends
from .unified import suite  # noqa: F401 - the benchmarks eval-all runs

method = "naclip"
class_rule = "naclip"
benchmarks = {
    "voc21": {"window": None, "stride": None, "prob_thd": 0.1},
    "voc20": {"window": None, "stride": None},
    "context60": {"prob_thd": 0.1},
    "coco_object": {"prob_thd": 0.1},
    "cityscapes": {"short_side": 560},
}

#: mIoU (%) published with the method's own settings, CLIP ViT-B/16, per benchmark of
#: ``suite`` (docs/results.md#training-free-ovss); ``ovdense eval-all`` prints them under
#: its own row in the paper protocol.
published = {
    "voc21": 64.07,
    "context60": 34.99,
    "coco_object": 36.19,
    "voc20": 83.03,
    "context59": 38.35,
    "coco_stuff171": 25.69,
    "cityscapes": 38.27,
    "ade20k_150": 19.05,
}
published_source = "NACLIP paper / repository (with PAMR)"
