"""Refiners: feature refiners mounted in a segmentor's ``refiner`` slot (CLIP-DINOiser's
affinity pooling), label refiners of its ``label_refiner`` slot (CorrCLIP's region vote), splice
aggregators for its ``aggregator`` slot (Trident's SAM affinity), PAMR
(label refinement) and FOUND saliency (a training target)."""

from typing import Any

from torch import nn

from ...utils.registry import Registry
from .clip_dinoiser import CLIPDINOiserHead, CLIPDINOiserRefiner
from .found import FOUNDSaliency, found_saliency
from .pamr import PAMR
from .region_vote import RegionVote, region_vote
from .trident import SAMAffinityAggregator, trident_affinity

__all__ = [
    "AGGREGATORS",
    "LABEL_REFINERS",
    "PAMR",
    "REFINERS",
    "CLIPDINOiserHead",
    "CLIPDINOiserRefiner",
    "FOUNDSaliency",
    "RegionVote",
    "SAMAffinityAggregator",
    "build_aggregator",
    "build_label_refiner",
    "build_refiner",
    "found_saliency",
    "region_vote",
    "trident_affinity",
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


AGGREGATORS: Registry = Registry("splice aggregator")
AGGREGATORS.__doc__ = """Splice aggregators: the ``aggregator`` slot of
:class:`~ovdense.modeling.segmentors.Segmentor` (its splice-then-segment mode).

A registered object is an ``nn.Module`` class (or a function returning one) whose instances mix
the spliced last-block tokens of one image over the whole image::

    aggregator(tokens: Tensor [B, C, h, w], images: Tensor [B, 3, H, W]) -> Tensor [B, C, h', w']

``tokens`` are the backbone's last-block output tokens of every window, averaged where windows
overlap (before the tower's final norm and projection); ``images`` are RGB in ``[0, 1]`` at the
input size. The output (any grid) is then projected into the joint space and classified.
"""
AGGREGATORS.register("sam_affinity")(SAMAffinityAggregator)


def build_aggregator(aggregator: str | nn.Module | None, **kwargs: Any) -> nn.Module | None:
    """A splice aggregator from a registered name (with constructor ``kwargs``), a module, or
    ``None``.

    Raises:
        KeyError: an unknown name (the message lists the registered aggregators).
        TypeError: ``kwargs`` without a name.
    """
    if aggregator is None or not isinstance(aggregator, str):
        if kwargs:
            raise TypeError(f"aggregator_kwargs {sorted(kwargs)} need an aggregator name.")
        return aggregator
    return AGGREGATORS.get(aggregator)(**kwargs)
