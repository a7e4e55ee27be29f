"""ProxyCLIP's evaluation settings (Lan et al., ECCV 2024; docs/protocols.md#per-method-settings):
short side 336, 336/112 windows, logit scale 40, class names split on "; " only (a line such as
"building, edifice" stays one name), background threshold 0.2 on VOC21."""

from ..seg.proxyclip_vitb16 import model  # noqa: F401 - the config this file extends
from .unified import suite  # noqa: F401 - the benchmarks eval-all runs

method = "proxyclip"
class_rule = "proxyclip"
# the official configs/cfg_<benchmark>.py (docs/parity_mmseg.md)
benchmarks = {
    "voc21": {"prob_thd": 0.2},
    "context60": {"prob_thd": 0.15},
    "coco_object": {"prob_thd": 0.25},
    "cityscapes": {"short_side": 448, "window": 224, "stride": 112},
    "ade20k_150": {"short_side": 448},
    "context459": {"short_side": 448},
    "ade20k_847": {"short_side": 448},
}
