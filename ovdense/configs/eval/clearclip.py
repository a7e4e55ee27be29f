"""ClearCLIP's evaluation settings (Lan et al., ECCV 2024; docs/protocols.md#per-method-settings):
short side 448, 448/224 windows, logit scale 50, fp16 on GPU, class names split on "," (leading
spaces kept), the single word "background" for VOC21 / COCO-Object."""

from ..seg.clearclip_vitb16 import model  # noqa: F401 - the config this file extends

class_rule = "clearclip"
benchmarks = {
    "voc21": {"prob_thd": 0.5},
}
