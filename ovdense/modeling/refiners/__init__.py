"""Refiners: feature refiners mounted in a segmentor's ``refiner`` slot (CLIP-DINOiser's
affinity pooling), label refiners of its ``label_refiner`` slot (CorrCLIP's region vote), PAMR
(label refinement) and FOUND saliency (a training target)."""

from typing import Any

from torch import nn

from ...utils.registry import Registry
from .clip_dinoiser import CLIPDINOiserHead, CLIPDINOiserRefiner
from .found import FOUNDSaliency, found_saliency
from .pamr import PAMR
from .region_vote import RegionVote, region_vote

__all__ = [
    "LABEL_REFINERS",
    "PAMR",
    "REFINERS",
    "CLIPDINOiserHead",
    "CLIPDINOiserRefiner",
    "FOUNDSaliency",
    "RegionVote",
    "build_label_refiner",
    "build_refiner",
    "found_saliency",
    "region_vote",
]

REFINERS: Registry = Registry("feature refiner")
REFINERS.__doc__ = """Feature refiners of :class:`~ovdense.modeling.segmentors.Segmentor`.

A registered object is an ``nn.Module`` class (or a function returning one) whose instances
refine the backbone's output of each window batch and may add auxiliary maps::

    refiner(features: DenseFeatures, images: Tensor [B, 3, H, W]) -> (DenseFeatures,
                                                                       dict[str, Tensor])

``images`` are the normalised window crops the backbone saw; the refined ``dense`` must stay
``[B, D, h, w]`` L2-normalised; every auxiliary map is ``[B, K, h', w']`` (any feature grid) and
is stitched over windows like the logits (the segmentor's ``aux_map``). The map
``"background"`` (a saliency in ``[0, 1]``) feeds the segmentor's ``saliency_rule``.
"""
REFINERS.register("clip_dinoiser")(CLIPDINOiserRefiner)


def build_refiner(refiner: str | nn.Module | None, **kwargs: Any) -> nn.Module | None:
    """A refiner from a registered name (with constructor ``kwargs``), a module, or ``None``.

    Raises:
        KeyError: an unknown name (the message lists the registered refiners).
        TypeError: ``kwargs`` without a name.
    """
    if refiner is None or not isinstance(refiner, str):
        if kwargs:
            raise TypeError(f"refiner_kwargs {sorted(kwargs)} need a refiner name.")
        return refiner
    return REFINERS.get(refiner)(**kwargs)


LABEL_REFINERS: Registry = Registry("label refiner")
LABEL_REFINERS.__doc__ = """Label refiners of :class:`~ovdense.modeling.segmentors.Segmentor`
(its ``label_refiner`` slot, applied last, to the final labels at the input size).

A registered object is an ``nn.Module`` class (or a function returning one) whose instances
take the labels and the images' class-agnostic region maps (from the segmentor's
``mask_source``)::

    label_refiner(labels: Tensor [B, H, W] int64, regions: Tensor [B, H, W] int) -> labels
"""
LABEL_REFINERS.register("region_vote")(RegionVote)


def build_label_refiner(refiner: str | nn.Module | None, **kwargs: Any) -> nn.Module | None:
    """A label refiner from a registered name (with ``kwargs``), a module, or ``None``."""
    if refiner is None or not isinstance(refiner, str):
        if kwargs:
            raise TypeError(f"label_refiner_kwargs {sorted(kwargs)} need a label refiner name.")
        return refiner
    return LABEL_REFINERS.get(refiner)(**kwargs)
