"""Dense backbones: images -> per-patch embeddings in CLIP's joint space.

``DenseCLIPBackbone`` (open_clip ViT, ``clip_vit.py``) and ``DenseEVABackbone`` (EVA02-CLIP,
``eva_vit.py``) are siblings over ``DenseTowerBackbone`` (``tower.py``); ``dense_backbone_for``
(``clip_vit.py``) picks the one that fits a model. The last-block strategies live in
:mod:`ovdense.modeling.strategies`, the vision foundation models in :mod:`ovdense.modeling.vfm`;
their names are re-exported here as before.
"""

from ..layers import interpolate_pos_embed
from ..strategies import (
    STRATEGIES,
    AttentionStrategy,
    ProxyAttention,
    TokenContext,
    build_strategy,
    gaussian_window_bias,
    list_strategies,
)
from ..vfm import VFMS, VisionFoundationModel, build_vfm, list_vfms
from .base import DenseBackbone, DenseFeatures, FeatureInfo
from .clip_vit import DenseCLIPBackbone, build_clip_backbone, dense_backbone_for
from .eva_vit import DenseEVABackbone, EvaBlockView, is_eva_tower
from .tower import DenseTowerBackbone

__all__ = [
    "STRATEGIES",
    "AttentionStrategy",
    "DenseBackbone",
    "DenseCLIPBackbone",
    "DenseEVABackbone",
    "DenseTowerBackbone",
    "EvaBlockView",
    "DenseFeatures",
    "FeatureInfo",
    "ProxyAttention",
    "TokenContext",
    "VFMS",
    "VisionFoundationModel",
    "build_clip_backbone",
    "build_strategy",
    "build_vfm",
    "dense_backbone_for",
    "gaussian_window_bias",
    "interpolate_pos_embed",
    "is_eva_tower",
    "list_strategies",
    "list_vfms",
]
