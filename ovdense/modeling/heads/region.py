"""Region classification from dense features: RoIAlign over boxes, pooling under masks.

Plain tensor-in / tensor-out functions and an ``nn.Module`` (docs/methods.md#region-classification)
so that detectors and evaluators can mount them on any
:class:`~ovdense.modeling.backbones.DenseFeatures`.

Coordinate convention (shared by :func:`box_features` and :func:`mask_features` with a
``stride``): feature cell ``(i, j)`` of a map with stride ``s`` covers the image pixels
``[j s, (j + 1) s) x [i s, (i + 1) s)`` (x, y), i.e. continuous image coordinate ``(x, y)`` maps
to continuous feature coordinate ``(x / s, y / s)`` and the centre of cell ``(i, j)`` is at
image coordinate ``((j + 0.5) s, (i + 0.5) s)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from ..backbones.base import DenseFeatures
from ..text.encoder import ClassEmbeddings
from .cosine import max_over_synonyms

__all__ = ["RegionClassifier", "box_features", "mask_features"]

EmptyMode = Literal["error", "zero"]


def _check_dense(dense: Tensor) -> None:
    if not isinstance(dense, Tensor) or dense.ndim != 4:
        shape = tuple(dense.shape) if isinstance(dense, Tensor) else type(dense).__name__
        raise ValueError(f"dense must be a [B, D, h, w] tensor, got {shape}.")


def _rois(boxes: Tensor | Sequence[Tensor], batch: int, device: torch.device) -> Tensor:
    """Boxes as one ``[K, 5]`` float tensor ``(batch_index, x1, y1, x2, y2)``."""
    if isinstance(boxes, Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(
                f"boxes as a tensor must be [K, 5] (batch_index, x1, y1, x2, y2), got "
                f"{tuple(boxes.shape)}; pass a list of [K_i, 4] tensors for per-image boxes."
            )
        rois = boxes.to(device=device, dtype=torch.float32)
        if rois.numel():
            idx = rois[:, 0]
            if (idx != idx.round()).any() or idx.min() < 0 or idx.max() >= batch:
                raise ValueError(
                    f"boxes[:, 0] must be integer batch indices in [0, {batch}), got values in "
                    f"[{idx.min().item()}, {idx.max().item()}]."
                )
    else:
        boxes = list(boxes)
        if len(boxes) != batch:
            raise ValueError(f"Got box lists for {len(boxes)} images but the batch has {batch}.")
        parts = []
        for b, bx in enumerate(boxes):
            if not isinstance(bx, Tensor) or bx.ndim != 2 or bx.shape[1] != 4:
                shape = tuple(bx.shape) if isinstance(bx, Tensor) else type(bx).__name__
                raise ValueError(f"boxes[{b}] must be a [K_i, 4] XYXY tensor, got {shape}.")
            bx = bx.to(device=device, dtype=torch.float32)
            parts.append(torch.cat([bx.new_full((bx.shape[0], 1), float(b)), bx], dim=1))
        rois = torch.cat(parts) if parts else torch.zeros(0, 5, device=device)
    if rois.numel() and ((rois[:, 3] < rois[:, 1]) | (rois[:, 4] < rois[:, 2])).any():
        bad = int(torch.nonzero((rois[:, 3] < rois[:, 1]) | (rois[:, 4] < rois[:, 2]))[0, 0])
        raise ValueError(
            f"Box {bad} is {rois[bad, 1:].tolist()}: boxes must be XYXY with x2 >= x1, y2 >= y1."
        )
    return rois


def box_features(
    dense: Tensor,
    boxes: Tensor | Sequence[Tensor],
    stride: int,
    output_size: int = 1,
    aligned: bool = True,
    sampling_ratio: int = -1,
) -> Tensor:
    """RoIAlign of a dense map over boxes, mean over the bins, L2-normalised.

    Boxes are in input-image pixels, XYXY. They are scaled by ``spatial_scale = 1 / stride``, so
    image coordinate ``x`` maps to feature coordinate ``x / stride`` and feature cell ``j``
    spans ``[j, j + 1)``. With ``aligned=True`` (torchvision's half-pixel correction) the sample
    points land on cell centres as expected: a box covering exactly one patch,
    ``[j s, i s, (j + 1) s, (i + 1) s]``, with ``output_size=1`` samples the centre of cell
    ``(i, j)`` and returns exactly that cell's feature; a box covering an ``n x n`` block of
    patches with ``output_size=n`` returns the normalised mean of those ``n * n`` features.
    Samples outside the map follow torchvision (clamped within one cell, zero beyond).

    Args:
        dense: ``[B, D, h, w]`` dense features.
        boxes: a list of ``B`` tensors ``[K_i, 4]`` (one per image, XYXY pixels), or one
            ``[K, 5]`` tensor ``(batch_index, x1, y1, x2, y2)``.
        stride: input pixels per feature cell.
        output_size: RoIAlign grid ``output_size x output_size`` (bins are then averaged).
        aligned: torchvision's ``aligned`` flag (half-pixel shift); keep ``True``.
        sampling_ratio: samples per bin side (``-1``: adaptive, ``ceil(bin size)``).

    Returns:
        ``[K, D]`` L2-normalised region features, in the order of the boxes (image by image
        for a list).

    Raises:
        ValueError: bad shapes, batch indices out of range, ``x2 < x1`` or ``y2 < y1``, or a
            non-positive ``stride`` / ``output_size``.
    """
    _check_dense(dense)
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}.")
    if output_size < 1:
        raise ValueError(f"output_size must be >= 1, got {output_size}.")
    rois = _rois(boxes, dense.shape[0], dense.device).to(dense.dtype)
    if rois.shape[0] == 0:
        return dense.new_zeros(0, dense.shape[1])
    pooled = roi_align(
        dense,
        rois,
        output_size=output_size,
        spatial_scale=1.0 / stride,
        sampling_ratio=sampling_ratio,
        aligned=aligned,
    )  # [K, D, o, o]
    return F.normalize(pooled.mean(dim=(2, 3)), dim=1)


def _mask_weights(mask: Tensor, grid: tuple[int, int], stride: int | None) -> Tensor:
    """``[K, H, W]`` masks -> ``[K, h, w]`` fraction of each feature cell they cover."""
    h, w = grid
    m = mask.float()[:, None]  # [K, 1, H, W]
    if stride is None:
        return F.interpolate(m, size=(h, w), mode="area")[:, 0]
    big_h, big_w = h * stride, w * stride
    m = m[..., :big_h, :big_w]  # pixels past the last full patch are not in any cell
    m = F.pad(m, (0, big_w - m.shape[-1], 0, big_h - m.shape[-2]))  # padding: uncovered
    return F.avg_pool2d(m, kernel_size=stride, stride=stride)[:, 0]


def mask_features(
    dense: Tensor,
    masks: Sequence[Tensor],
    stride: int | None = None,
    empty: EmptyMode = "error",
) -> Tensor:
    """Mask pooling: average of the dense features weighted by mask coverage, L2-normalised.

    Each mask is reduced to the feature grid as the fraction of each cell it covers (a float
    mask counts as soft coverage in ``[0, 1]``), then
    ``feat[k] = normalize(sum_ij w[k, i, j] dense[:, i, j] / sum_ij w[k, i, j])``.

    How masks meet the grid:

    - ``stride`` given: the module convention (cell ``(i, j)`` covers pixels
      ``[i s, (i + 1) s) x [j s, (j + 1) s)``). Mask pixels past ``h * s`` / ``w * s`` (dropped
      by a flooring backbone) are ignored; a mask smaller than ``h * s x w * s`` (padding
      backbone) is zero-padded at the bottom / right. ``w`` is then exactly the covered
      fraction of each ``s x s`` patch.
    - ``stride=None``: the mask is taken to span the whole map and is resized with area
      interpolation (``F.interpolate(mode="area")``, i.e. adaptive average pooling; exact
      covered fractions when ``H, W`` are multiples of ``h, w``).

    Args:
        dense: ``[B, D, h, w]`` dense features.
        masks: a list of ``B`` tensors ``[K_i, H, W]`` (bool or float in ``[0, 1]``) at image
            resolution, one per image (``H, W`` may differ between images).
        stride: input pixels per feature cell, or ``None`` (see above).
        empty: what to do with a mask covering no cell: ``"error"`` raises a ``ValueError``
            naming it; ``"zero"`` returns an all-zero feature (cosine 0 with every class).

    Returns:
        ``[K, D]`` region features (``K = sum K_i``), image by image.

    Raises:
        ValueError: bad shapes, negative mask values, ``len(masks) != B``, or an empty mask
            with ``empty="error"``.
    """
    _check_dense(dense)
    if empty not in ("error", "zero"):
        raise ValueError(f"empty must be 'error' or 'zero', got {empty!r}.")
    if stride is not None and stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}.")
    masks = list(masks)
    batch, dim, h, w = dense.shape
    if len(masks) != batch:
        raise ValueError(f"Got mask lists for {len(masks)} images but the batch has {batch}.")
    out = []
    offset = 0
    for b, mask in enumerate(masks):
        if not isinstance(mask, Tensor) or mask.ndim != 3:
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"masks[{b}] must be a [K_i, H, W] tensor, got {shape}.")
        if mask.shape[0] == 0:
            continue
        if mask.dtype != torch.bool and (mask < 0).any():
            raise ValueError(f"masks[{b}] has negative values; masks must be in [0, 1].")
        weights = _mask_weights(mask.to(dense.device), (h, w), stride).to(dense.dtype)
        total = weights.sum(dim=(1, 2))  # [K_i]
        is_empty = total <= 0
        if is_empty.any() and empty == "error":
            i = int(torch.nonzero(is_empty)[0, 0])
            raise ValueError(
                f"Mask {offset + i} (image {b}, mask {i}) covers no feature cell; pass "
                "empty='zero' to get a zero feature instead."
            )
        pooled = torch.einsum("khw,dhw->kd", weights, dense[b])
        pooled = pooled / total.clamp_min(torch.finfo(pooled.dtype).tiny)[:, None]
        out.append(F.normalize(pooled, dim=1))
        offset += mask.shape[0]
    return torch.cat(out) if out else dense.new_zeros(0, dim)


class RegionClassifier(nn.Module):
    """Zero-shot classification of boxes or masks: pooled dense features vs text embeddings.

    ``logits[k, n] = logit_scale * <region[k], embeds[n]>`` per name; class logits are the max
    over each class's names; class probabilities follow the segmentor's convention (softmax over
    *names*, then max over each class's names); labels are their argmax.

    Args:
        output_size: RoIAlign grid for boxes (see :func:`box_features`).
        aligned: RoIAlign half-pixel alignment.
        sampling_ratio: RoIAlign samples per bin side (``-1``: adaptive).
        empty: empty-mask policy (see :func:`mask_features`).
    """

    def __init__(
        self,
        output_size: int = 1,
        aligned: bool = True,
        sampling_ratio: int = -1,
        empty: EmptyMode = "error",
    ) -> None:
        super().__init__()
        if output_size < 1:
            raise ValueError(f"output_size must be >= 1, got {output_size}.")
        if empty not in ("error", "zero"):
            raise ValueError(f"empty must be 'error' or 'zero', got {empty!r}.")
        self.output_size = output_size
        self.aligned = aligned
        self.sampling_ratio = sampling_ratio
        self.empty: EmptyMode = empty

    def region_features(
        self,
        features: DenseFeatures | Tensor,
        boxes: Tensor | Sequence[Tensor] | None = None,
        masks: Sequence[Tensor] | None = None,
        stride: int | None = None,
    ) -> Tensor:
        """``[K, D]`` L2-normalised features of the boxes or masks (exactly one of the two).

        ``stride`` defaults to ``features.stride`` for :class:`DenseFeatures`; boxes on a raw
        tensor need it; masks on a raw tensor without it use area interpolation.
        """
        if (boxes is None) == (masks is None):
            raise ValueError("Pass exactly one of boxes or masks.")
        if isinstance(features, DenseFeatures):
            dense = features.dense
            stride = features.stride if stride is None else stride
        else:
            dense = features
        if boxes is not None:
            if stride is None:
                raise ValueError("Box features need a stride: pass DenseFeatures or stride=.")
            return box_features(
                dense, boxes, stride, self.output_size, self.aligned, self.sampling_ratio
            )
        assert masks is not None
        return mask_features(dense, masks, stride=stride, empty=self.empty)

    def forward(
        self,
        features: DenseFeatures | Tensor,
        class_embeds: ClassEmbeddings | Tensor,
        boxes: Tensor | Sequence[Tensor] | None = None,
        masks: Sequence[Tensor] | None = None,
        logit_scale: float = 100.0,
        name_to_class: Tensor | None = None,
        stride: int | None = None,
    ) -> dict[str, Tensor]:
        """Classify regions.

        Args:
            features: :class:`DenseFeatures` or a ``[B, D, h, w]`` dense map.
            class_embeds: :class:`ClassEmbeddings` or ``[N, D]`` L2-normalised name embeddings.
            boxes: per-image ``[K_i, 4]`` XYXY pixel boxes, or ``[K, 5]`` with batch index.
            masks: per-image ``[K_i, H, W]`` masks at image resolution.
            logit_scale: multiplier of the cosines.
            name_to_class: ``[N]`` class of each name for a raw embedding tensor (default: one
                name per class); ignored for :class:`ClassEmbeddings`.
            stride: overrides ``features.stride``; needed for boxes on a raw tensor.

        Returns:
            ``logits`` ``[K, C]`` (scaled cosines, max over synonyms), ``probs`` ``[K, C]``
            (softmax over names, max over synonyms) and ``labels`` ``[K]`` (int64).

        Raises:
            ValueError: both or neither of ``boxes`` / ``masks``, mismatched dims or shapes.
        """
        if isinstance(class_embeds, ClassEmbeddings):
            embeds = class_embeds.embeds
            name_to_class = class_embeds.name_to_class
            num_classes = class_embeds.num_classes
        else:
            embeds = class_embeds
            if embeds.ndim != 2:
                raise ValueError(f"class_embeds must be [N, D], got {tuple(embeds.shape)}.")
            if name_to_class is None:
                name_to_class = torch.arange(embeds.shape[0])
            elif name_to_class.shape != (embeds.shape[0],):
                raise ValueError(
                    f"name_to_class must be [N={embeds.shape[0]}], got "
                    f"{tuple(name_to_class.shape)}."
                )
            num_classes = int(name_to_class.max()) + 1 if name_to_class.numel() else 0
        regions = self.region_features(features, boxes, masks, stride)  # [K, D]
        if regions.shape[1] != embeds.shape[1]:
            raise ValueError(
                f"Feature dim {regions.shape[1]} != text embedding dim {embeds.shape[1]}: the "
                "image and text towers come from different models."
            )
        name_to_class = name_to_class.to(regions.device)
        name_logits = logit_scale * regions @ embeds.to(regions).T  # [K, N]
        logits = max_over_synonyms(name_logits, name_to_class, num_classes)
        probs = max_over_synonyms(name_logits.softmax(dim=1), name_to_class, num_classes)
        return {"logits": logits, "probs": probs, "labels": probs.argmax(dim=1)}
