"""Dense backbones: images -> per-patch embeddings in CLIP's joint space."""

from .attention import (
    STRATEGIES,
    AttentionStrategy,
    TokenContext,
    build_strategy,
    gaussian_window_bias,
    list_strategies,
)
from .base import DenseBackbone, DenseFeatures, FeatureInfo
from .clip_vit import DenseCLIPBackbone, build_clip_backbone, dense_backbone_for
from .eva_vit import DenseEVABackbone, EvaBlockView, is_eva_tower
from .pos_embed import interpolate_pos_embed
from .proxy import ProxyAttention  # registers the "proxy" strategy
from .vfm import VFMS, VisionFoundationModel, build_vfm, list_vfms

__all__ = [
    "STRATEGIES",
    "AttentionStrategy",
    "DenseBackbone",
    "DenseCLIPBackbone",
    "DenseEVABackbone",
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
