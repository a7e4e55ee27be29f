"""ClearCLIP's evaluation settings (Lan et al., ECCV 2024; docs/protocols.md#per-method-settings):
short side 448, 448/224 windows, logit scale 50, fp16 on GPU, class names split on "," (leading
spaces kept), the single word "background" for VOC21 / COCO-Object."""

from ..seg.clearclip_vitb16 import model  # noqa: F401 - the config this file extends
from .unified import suite  # noqa: F401 - the benchmarks eval-all runs

method = "clearclip"
class_rule = "clearclip"
# the official configs/cfg_<benchmark>.py (docs/parity_mmseg.md)
benchmarks = {
    "voc21": {"prob_thd": 0.5},
    "context60": {"prob_thd": 0.15},
    "coco_object": {"prob_thd": 0.4},
    "cityscapes": {"window": 224, "stride": 224},
}

#: mIoU (%) published with the method's own settings, CLIP ViT-B/16, per benchmark of
#: ``suite`` (docs/results.md#training-free-ovss); ``ovdense eval-all`` prints them under
#: its own row in the paper protocol.
published = {
    "voc21": 51.8,
    "context60": 32.6,
    "coco_object": 33.0,
    "voc20": 80.9,
    "context59": 35.9,
    "coco_stuff171": 23.9,
    "cityscapes": 30.0,
    "ade20k_150": 16.7,
}
published_source = "ClearCLIP paper / repository"
