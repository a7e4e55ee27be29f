"""ResCLIP's evaluation settings (Yang et al., CVPR 2025; the official repository's
``configs/cfg_*.py``): per benchmark the feedback threshold ``temp_thd`` and the RCS / SFR weights
``(τ, λ)``, whole-image inference on VOC, background threshold 0.1 on VOC21 / PC60 / Object,
Cityscapes at 560; class names split on ", " (synonyms max-pooled), as NACLIP."""

from ..seg.resclip_vitb16 import model
from .unified import suite  # noqa: F401 - the benchmarks eval-all runs

method = "resclip"
class_rule = "naclip"


def _kwargs(temp_thd: float, rcs: tuple[float, float], sfr: tuple[float, float]) -> dict:
    """The preset's strategy arguments with one benchmark's feedback threshold and weights."""
    return {
        **dict(model.strategy_kwargs),
        "temp_thd": temp_thd,
        "rcs_weights": rcs,
        "sfr_weights": sfr,
    }


benchmarks = {
    "voc21": {
        "window": None,
        "stride": None,
        "prob_thd": 0.1,
        "strategy_kwargs": _kwargs(0.50, (2.0, 0.3), (2.2, 0.7)),
    },
    "context60": {"prob_thd": 0.1, "strategy_kwargs": _kwargs(0.30, (2.0, 0.3), (1.8, 0.7))},
    "coco_object": {"prob_thd": 0.1, "strategy_kwargs": _kwargs(0.11, (2.0, 0.4), (1.8, 0.7))},
    "voc20": {
        "window": None,
        "stride": None,
        "strategy_kwargs": _kwargs(0.10, (2.0, 0.6), (2.1, 0.6)),
    },
    "context59": {"strategy_kwargs": _kwargs(0.25, (2.0, 0.4), (1.8, 0.7))},
    "coco_stuff171": {"strategy_kwargs": _kwargs(0.11, (2.0, 0.4), (1.8, 0.7))},
    "cityscapes": {"short_side": 560, "strategy_kwargs": _kwargs(0.10, (2.0, 0.2), (2.1, 0.6))},
    "ade20k_150": {"strategy_kwargs": _kwargs(0.25, (2.0, 0.3), (2.1, 0.7))},
}
del _kwargs

#: mIoU (%) published per benchmark of ``suite``: the official repository's README results
#: tables (``figs/main_results_w.png``, ``figs/main_results_wo.png``), row "+ResCLIP (ours)" on
#: NACLIP, CLIP ViT-B/16; their mean is the paper's 41.4.
published = {
    "voc21": 61.1,
    "context60": 33.5,
    "coco_object": 35.0,
    "voc20": 86.0,
    "context59": 36.8,
    "coco_stuff171": 24.7,
    "cityscapes": 35.9,
    "ade20k_150": 18.0,
}
published_source = "ResCLIP repository README (results tables), NACLIP + ResCLIP, ViT-B/16"
