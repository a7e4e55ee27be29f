"""``vanilla``: CLIP's own last block (the reference the other strategies change)."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from .base import STRATEGIES, AttentionStrategy, TokenContext

__all__ = ["VanillaAttention"]


@STRATEGIES.register("vanilla")
class VanillaAttention(AttentionStrategy):
    """CLIP's own last block: ``softmax(q kᵀ s) v``, residual and FFN kept."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor, ctx: TokenContext) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v)

    def attention_terms(self, q: Tensor, k: Tensor, ctx: TokenContext) -> list:
        return [(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, None)]
