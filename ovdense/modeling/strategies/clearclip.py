"""``clearclip``: ClearCLIP (Lan et al., ECCV 2024)."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from .base import STRATEGIES, AttentionStrategy, TokenContext

__all__ = ["ClearCLIPAttention"]


@STRATEGIES.register("clearclip")
class ClearCLIPAttention(AttentionStrategy):
    """ClearCLIP (Lan et al., ECCV 2024): q-q attention ``softmax(q qᵀ s)``, residual and FFN
    dropped (output ``out_proj(A v)``)."""

    default_keep_residual = False

    def attend(self, q: Tensor, k: Tensor, v: Tensor, ctx: TokenContext) -> Tensor:
        return F.scaled_dot_product_attention(q, q, v)

    def attention_terms(self, q: Tensor, k: Tensor, ctx: TokenContext) -> list:
        return [(q @ q.transpose(-1, -2) * q.shape[-1] ** -0.5, None)]
