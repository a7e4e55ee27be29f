"""SC-CLIP's evaluation settings (Bai et al., 2024; the official repository's ``configs/cfg_*.py``):
224/112 windows on every benchmark (VOC included), VOC21 logit scale 50 with background threshold
0.15 and area threshold 0.1, PC60 threshold 0.15, Object logit scale 55 with threshold 0.35,
Cityscapes at 560; class names split on ", " (synonyms max-pooled), as SCLIP."""

from ..seg.scclip_vitb16 import model  # noqa: F401 - the config this file extends
from .unified import suite  # noqa: F401 - the benchmarks eval-all runs

method = "scclip"
class_rule = "sclip"
benchmarks = {
    "voc21": {"logit_scale": 50.0, "prob_thd": 0.15, "area_thd": 0.1},
    "context60": {"prob_thd": 0.15},
    "coco_object": {"logit_scale": 55.0, "prob_thd": 0.35},
    "cityscapes": {"short_side": 560},
}

#: mIoU (%) published per benchmark of ``suite``. The paper's 8-benchmark mean is 43.9 (CLIP
#: ViT-B/16; 45.2 with ViT-L/14). Its per-benchmark figures could not be read offline, so none
#: are listed and ``eval-all`` prints no published row for this method (a known gap, see the
#: README's methods table).
published: dict[str, float] = {}
#: (source, with the figures: "SC-CLIP paper (arXiv 2411.15869), main results table, ViT-B/16")
published_source = ""
