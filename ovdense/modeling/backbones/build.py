"""Builders: the dense backbone that fits a CLIP model's image tower."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..clip import load_clip
from ..strategies import AttentionStrategy
from .clip_vit import DenseCLIPBackbone
from .eva_vit import DenseEVABackbone, is_eva_tower
from .tower import DenseTowerBackbone

__all__ = ["build_clip_backbone", "dense_backbone_for"]


def dense_backbone_for(
    clip: nn.Module,
    strategy: str | AttentionStrategy = "vanilla",
    strategy_kwargs: dict[str, Any] | None = None,
    pos_interp: str = "size",
    out_indices: Sequence[int] = (),
) -> DenseTowerBackbone:
    """The dense backbone that fits ``clip``'s image tower (the model or its ``.visual``):
    :class:`~ovdense.modeling.backbones.eva_vit.DenseEVABackbone` for an EVA02-CLIP tower
    (open_clip ``EVA02-B-16``, ``EVA02-L-14-336``, ...), else :class:`DenseCLIPBackbone`.
    Arguments as for :class:`DenseCLIPBackbone`.
    """
    cls = DenseEVABackbone if is_eva_tower(clip) else DenseCLIPBackbone
    return cls(
        clip,
        strategy=strategy,
        strategy_kwargs=strategy_kwargs,
        pos_interp=pos_interp,
        out_indices=out_indices,
    )


def build_clip_backbone(
    model_name: str | None = None,
    pretrained: str | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    config: dict[str, Any] | None = None,
    model: nn.Module | None = None,
    strategy: str | AttentionStrategy = "vanilla",
    strategy_kwargs: dict[str, Any] | None = None,
    pos_interp: str = "size",
    out_indices: Sequence[int] = (),
    device: str | torch.device = "cpu",
) -> DenseTowerBackbone:
    """One-liner: :func:`~ovdense.modeling.clip.load_clip` + :func:`dense_backbone_for`.

    Example::

        backbone = build_clip_backbone("ViT-B-16", "openai", strategy="naclip")
    """
    clip = load_clip(
        model_name, pretrained, checkpoint=checkpoint, config=config, model=model, device=device
    )
    return dense_backbone_for(
        clip,
        strategy=strategy,
        strategy_kwargs=strategy_kwargs,
        pos_interp=pos_interp,
        out_indices=out_indices,
    )
