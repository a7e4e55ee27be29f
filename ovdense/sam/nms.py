"""Mask IoU and greedy non-maximum suppression of binary masks.

:func:`mask_iou` computes the IoU of every pair of masks block by block (``block`` masks at a
time as float rows), so its memory is ``2 * block * H * W * 4`` bytes plus the ``[K, K]`` result
whatever the number of masks. :func:`mask_nms` is the usual greedy rule: masks are visited by
decreasing score, a mask is kept unless a kept mask of the same class (or any kept mask, with
``labels=None``) overlaps it with IoU above the threshold.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["mask_iou", "mask_nms"]

MaskArray = np.ndarray | Tensor


def _as_flat_bool(masks: MaskArray, name: str = "masks") -> Tensor:
    """``[K, H, W]`` masks (numpy or torch, bool or 0/1) -> ``[K, H*W]`` bool tensor."""
    t = torch.from_numpy(np.asarray(masks)) if isinstance(masks, np.ndarray) else masks
    if not isinstance(t, Tensor) or t.ndim != 3:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(masks).__name__
        raise ValueError(f"{name} must be [K, H, W] binary masks, got {shape}.")
    return (t != 0).reshape(t.shape[0], t.shape[1] * t.shape[2])


def mask_iou(
    masks: MaskArray,
    other: MaskArray | None = None,
    block: int = 64,
    groups: MaskArray | None = None,
) -> Tensor:
    """IoU of every pair of binary masks.

    Args:
        masks: ``[K, H, W]`` bool (or 0/1) masks, numpy or torch.
        other: ``[M, H, W]`` masks of the same size (default: ``masks`` itself).
        block: masks per block of the pairwise product (bounds memory, see the module docstring).
        groups: optional ``[K]`` integer group of each mask (``other`` must be ``None``): pairs
            of different groups get IoU 0 without being computed (per-class NMS).

    Returns:
        ``[K, M]`` float32 IoU; the IoU of two empty masks is 0.

    Raises:
        ValueError: shapes that are not ``[K, H, W]`` or masks of different sizes.
    """
    a = _as_flat_bool(masks)
    b = a if other is None else _as_flat_bool(other, "other")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"masks and other have different sizes ({a.shape[1]} vs {b.shape[1]} pixels)."
        )
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}.")
    g: Tensor | None = None
    if groups is not None:
        if other is not None:
            raise ValueError("groups is only supported for the IoU of masks with themselves.")
        g = torch.as_tensor(np.asarray(groups) if isinstance(groups, np.ndarray) else groups)
        if g.shape != (a.shape[0],):
            raise ValueError(f"groups must be [K={a.shape[0]}], got {tuple(g.shape)}.")
    area_a = a.sum(dim=1, dtype=torch.float32)
    area_b = area_a if other is None else b.sum(dim=1, dtype=torch.float32)
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float32)
    for i in range(0, a.shape[0], block):
        rows = a[i : i + block].float()
        for j in range(0, b.shape[0], block):
            if g is not None and not bool(torch.isin(g[i : i + block], g[j : j + block]).any()):
                continue  # no pair of this block shares a group
            inter = rows @ b[j : j + block].float().T  # [bi, bj]
            union = area_a[i : i + block, None] + area_b[None, j : j + block] - inter
            out[i : i + block, j : j + block] = torch.where(
                union > 0, inter / union.clamp_min(1.0), torch.zeros_like(inter)
            )
    if g is not None:
        out = torch.where(g[:, None] == g[None, :], out, torch.zeros_like(out))
    return out


def mask_nms(
    masks: MaskArray,
    scores: MaskArray,
    iou_threshold: float = 0.5,
    labels: MaskArray | None = None,
    block: int = 64,
) -> Tensor:
    """Greedy non-maximum suppression of binary masks by mask IoU.

    Masks are visited by decreasing score (ties: lower index first); a mask is suppressed when
    its IoU with an already kept mask is strictly greater than ``iou_threshold``. With
    ``labels`` only masks of the same label suppress each other (per-class NMS); with
    ``labels=None`` every pair counts (class-agnostic NMS).

    Args:
        masks: ``[K, H, W]`` bool (or 0/1) masks.
        scores: ``[K]`` scores.
        iou_threshold: IoU above which the lower-scored mask is dropped, in ``[0, 1]``.
        labels: optional ``[K]`` integer labels.
        block: see :func:`mask_iou`.

    Returns:
        ``[N]`` int64 indices of the kept masks, by decreasing score.

    Raises:
        ValueError: mismatched lengths or a threshold outside ``[0, 1]``.
    """
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}.")
    flat = _as_flat_bool(masks)
    s = torch.as_tensor(np.asarray(scores) if isinstance(scores, np.ndarray) else scores)
    s = s.detach().float().cpu().reshape(-1)
    k = flat.shape[0]
    if s.shape[0] != k:
        raise ValueError(f"Got {s.shape[0]} scores for {k} masks.")
    if labels is not None:
        lab = torch.as_tensor(np.asarray(labels) if isinstance(labels, np.ndarray) else labels)
        lab = lab.detach().cpu().reshape(-1)
        if lab.shape[0] != k:
            raise ValueError(f"Got {lab.shape[0]} labels for {k} masks.")
    if k == 0:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.sort(-s, stable=True).indices
    groups = lab[order] if labels is not None else None
    iou = mask_iou(flat[order].reshape(k, 1, -1), block=block, groups=groups)  # sorted order
    overlaps = iou > float(iou_threshold)
    removed = torch.zeros(k, dtype=torch.bool)
    kept = []
    for i in range(k):
        if removed[i]:
            continue
        kept.append(i)
        removed |= overlaps[i]
    return order[torch.tensor(kept, dtype=torch.int64)]
