"""Region vote: each class-agnostic region takes its most frequent label (CorrCLIP's map
correction, applied to the final label map in a segmentor's ``label_refiner`` slot)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RegionVote", "region_vote"]


def region_vote(labels: Tensor, regions: Tensor, skip_first: bool = True) -> Tensor:
    """Every region of ``regions`` relabelled with its most frequent label.

    Args:
        labels: ``[H, W]`` int class labels (after the thresholds and the argmax).
        regions: ``[H, W]`` int region map (:func:`~ovdense.utils.regions.masks_to_region_map`:
            ``0`` where no mask is).
        skip_first: leave the region of the smallest label present alone (the unsegmented
            pixels; CorrCLIP's code skips the smallest label even when a mask covers every
            pixel).

    Returns:
        ``[H, W]`` labels (same dtype); ties go to the smallest label (``torch.mode`` on the
        CPU).
    """
    if labels.shape != regions.shape:
        raise ValueError(
            f"labels {tuple(labels.shape)} and regions {tuple(regions.shape)} differ in size."
        )
    if labels.numel() == 0:
        return labels.clone()
    values, ids = torch.unique(regions.flatten(), return_inverse=True)
    flat = labels.flatten().long()
    if flat.min() < 0:
        raise ValueError("region_vote needs labels >= 0.")
    classes = int(flat.max()) + 1
    counts = torch.bincount(ids * classes + flat, minlength=values.numel() * classes)
    winners = counts.reshape(values.numel(), classes).argmax(dim=1)  # first max: smallest
    voted = winners[ids]
    if skip_first:
        voted = torch.where(ids == 0, flat, voted)
    return voted.reshape(labels.shape).to(labels.dtype)


class RegionVote(nn.Module):
    """CorrCLIP's map correction as a label refiner:
    ``label_refiner(labels [B, H, W], regions [B, H, W]) -> labels [B, H, W]``, each region of
    each image (but the unsegmented one) relabelled by its most frequent label
    (:func:`region_vote`).

    Args:
        skip_first: see :func:`region_vote` (the official code: ``True``).
    """

    def __init__(self, skip_first: bool = True) -> None:
        super().__init__()
        self.skip_first = bool(skip_first)

    def forward(self, labels: Tensor, regions: Tensor) -> Tensor:
        if labels.ndim != 3 or regions.shape != labels.shape:
            raise ValueError(
                f"RegionVote takes labels and regions of one shape [B, H, W], got "
                f"{tuple(labels.shape)} and {tuple(regions.shape)}."
            )
        regions = regions.to(labels.device)
        return torch.stack(
            [region_vote(lab, reg, self.skip_first) for lab, reg in zip(labels, regions)]
        )

    def extra_repr(self) -> str:
        return f"skip_first={self.skip_first}"
