"""``sclip``: SCLIP (Wang et al., ECCV 2024) correlative self-attention."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from .base import STRATEGIES, AttentionStrategy, TokenContext

__all__ = ["SCLIPAttention"]


@STRATEGIES.register("sclip")
class SCLIPAttention(AttentionStrategy):
    """SCLIP (Wang et al., ECCV 2024) correlative self-attention:
    ``softmax(q qᵀ s) + softmax(k kᵀ s)``, residual and FFN kept."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor, ctx: TokenContext) -> Tensor:
        return F.scaled_dot_product_attention(q, q, v) + F.scaled_dot_product_attention(k, k, v)

    def attention_terms(self, q: Tensor, k: Tensor, ctx: TokenContext) -> list:
        s = q.shape[-1] ** -0.5
        return [(q @ q.transpose(-1, -2) * s, None), (k @ k.transpose(-1, -2) * s, None)]
