"""Trident's evaluation settings (Shi et al., ICCV 2025; the official repository's
``configs/cfg_*.py``): per benchmark the short side of the test resize, the background
threshold, the SAM-affinity threshold (``cos_fac``, ``refine_neg_cos``), SAM on two halves of
Cityscapes images, and the SAM refinement's ``coarse_thresh``; class names split on "; " only,
as ProxyCLIP (the class-name files are the same)."""

from ..seg.trident_vitb16 import model
from .unified import suite  # noqa: F401 - the benchmarks eval-all runs

method = "trident"
class_rule = "proxyclip"


def _aggregator(**changes) -> dict:
    """The preset's aggregator arguments with one benchmark's changes."""
    return {**dict(model.aggregator_kwargs), **changes}


def _refiner(coarse_thresh: float):
    """The preset's SAM refinement with one benchmark's coarse threshold."""
    from copy import deepcopy

    refiner = deepcopy(model.post_refiner)
    refiner.coarse_thresh = coarse_thresh
    return refiner


benchmarks = {
    "voc21": {"short_side": 448, "prob_thd": 0.2, "post_refiner": _refiner(0.2)},
    "context60": {"short_side": 576, "prob_thd": 0.15, "post_refiner": _refiner(0.15)},
    "coco_object": {"short_side": 448, "prob_thd": 0.25, "post_refiner": _refiner(0.25)},
    "voc20": {
        "short_side": 336,
        "stride": 112,
        "aggregator_kwargs": _aggregator(cos_fac=0.0),
        "post_refiner": _refiner(0.2),
    },
    "context59": {"short_side": 576, "post_refiner": _refiner(0.15)},
    "coco_stuff171": {"short_side": 448, "post_refiner": _refiner(0.05)},
    "cityscapes": {
        "short_side": 688,
        "aggregator_kwargs": _aggregator(cos_fac=3.0, refine_neg_cos=False, columns=2),
        "post_refiner": _refiner(0.10),
    },
    "ade20k_150": {
        "short_side": 576,
        "aggregator_kwargs": _aggregator(refine_neg_cos=False),
        "post_refiner": _refiner(0.05),
    },
    "context459": {"short_side": 448},
    "ade20k_847": {"short_side": 448},
}
del _aggregator, _refiner

#: mIoU (%) published per benchmark of ``suite``: CLIP ViT-B/16 (mean 45.8; OpenCLIP ViT-H/14:
#: 70.8 / 40.1 / 42.2 / 88.7 / 44.3 / 28.6 / 47.6 / 26.7, mean 48.6).
published = {
    "voc21": 67.1,
    "context60": 38.6,
    "coco_object": 41.1,
    "voc20": 84.5,
    "context59": 42.2,
    "coco_stuff171": 28.3,
    "cityscapes": 42.9,
    "ade20k_150": 21.9,
}
published_source = (
    "Trident README (github.com/YuHengsss/Trident, results table assets/data_result.png), "
    "CLIP ViT-B/16 row"
)
