"""NACLIP's evaluation settings (Hajimiri et al., WACV 2025; docs/protocols.md#per-method-settings):
PAMR on, whole-image inference on VOC, background threshold 0.1 on the datasets with a background
class."""

from ..seg.naclip_vitb16 import model  # noqa: F401 - the config this file extends

class_rule = "naclip"
benchmarks = {
    "voc21": {"window": None, "stride": None, "prob_thd": 0.1},
    "voc20": {"window": None, "stride": None},
    "context60": {"prob_thd": 0.1},
    "coco_object": {"prob_thd": 0.1},
    "cityscapes": {"short_side": 560},
}
