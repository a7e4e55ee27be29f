"""``maskclip``: MaskCLIP (Zhou et al., ECCV 2022)."""

from __future__ import annotations

from torch import Tensor

from .base import STRATEGIES, AttentionStrategy, TokenContext

__all__ = ["MaskCLIPAttention"]


@STRATEGIES.register("maskclip")
class MaskCLIPAttention(AttentionStrategy):
    """MaskCLIP (Zhou et al., ECCV 2022): the value path, each token attends only to itself
    (output ``out_proj(v)``), residual and FFN kept."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor, ctx: TokenContext) -> Tensor:
        return v
