"""Compatibility re-exports: the last-block strategies live in :mod:`ovdense.modeling.strategies`
(one file per method); import them from there."""

from ..strategies.base import (
    STRATEGIES,
    AttentionStrategy,
    TokenContext,
    _attn_params,
    build_strategy,
    list_strategies,
    merge_heads,
    split_qkv,
)
from ..strategies.clearclip import ClearCLIPAttention
from ..strategies.maskclip import MaskCLIPAttention
from ..strategies.naclip import NACLIPAttention, gaussian_window_bias
from ..strategies.sclip import SCLIPAttention
from ..strategies.vanilla import VanillaAttention

__all__ = [
    "STRATEGIES",
    "AttentionStrategy",
    "ClearCLIPAttention",
    "MaskCLIPAttention",
    "NACLIPAttention",
    "SCLIPAttention",
    "TokenContext",
    "VanillaAttention",
    "_attn_params",
    "build_strategy",
    "gaussian_window_bias",
    "list_strategies",
    "merge_heads",
    "split_qkv",
]
