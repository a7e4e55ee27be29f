"""CorrCLIP's evaluation settings (Zhang et al., ICCV 2025; the official repository's
``CorrCLIPv1/configs/cfg_*.py``): short side 336 (ADE20K and Cityscapes 448), 336/112 windows
(Cityscapes 224/112), background threshold 0.2 on VOC21, 0.15 on PC60, 0.25 on COCO-Object, the
region vote on the final labels; class names split on "; " only (its ``get_cls_idx``), as
ProxyCLIP. ovdense reads ProxyCLIP's class-name files: CorrCLIP's copies differ in two places
(class "person" named "people"; COCO-Object's background list without "bed")."""

from ..seg.corrclip_vitb16 import model  # noqa: F401 - the config this file extends
from .unified import suite  # noqa: F401 - the benchmarks eval-all runs

method = "corrclip"
class_rule = "proxyclip"
benchmarks = {
    "voc21": {"prob_thd": 0.2},
    "context60": {"prob_thd": 0.15},
    "coco_object": {"prob_thd": 0.25},
    "cityscapes": {"short_side": 448, "window": 224, "stride": 112},
    "ade20k_150": {"short_side": 448},
}

#: mIoU (%) published per benchmark of ``suite``: the official repository's README
#: (CorrCLIPv1/README.md, "Results", ViT-B, mask generator SAM2_8: MetaCLIP ViT-B/16 with SAM 2
#: masks from 8 points per side, the online generator the preset runs); its average column
#: reads 50.4 (51.0 with pre-generated 32-point masks, SAM2_32).
published = {
    "voc21": 73.9,
    "context60": 43.7,
    "coco_object": 43.6,
    "voc20": 87.6,
    "context59": 48.0,
    "coco_stuff171": 31.8,
    "cityscapes": 47.9,
    "ade20k_150": 26.5,
}
published_source = "CorrCLIP repository README (CorrCLIPv1, ViT-B, SAM2_8 masks)"
