"""``catseg``: the dense last block of CAT-Seg (Cho et al., CVPR 2024)."""

from __future__ import annotations

from torch import Tensor

from .base import (
    STRATEGIES,
    AttentionBlock,
    AttentionStrategy,
    TokenContext,
    merge_heads,
    split_qkv,
)

__all__ = ["CATSegAttention"]


@STRATEGIES.register("catseg")
class CATSegAttention(AttentionStrategy):
    """CAT-Seg's dense last block: the value path ``o = out_proj(v)`` (as MaskCLIP), but the
    residual added to every token is the *CLS* token entering the block, then the FFN:
    ``y = x_cls + o``, output ``y + mlp(ln_2(y))``.

    This is what the official code computes for its cost volume (its CLIP's dense forward adds
    ``x[:1]``, the class token, to the value-path output of every token). ``keep_residual=False``
    returns ``o`` alone.
    """

    def attend(self, q: Tensor, k: Tensor, v: Tensor, ctx: TokenContext) -> Tensor:
        return v

    def forward(self, block: AttentionBlock, x: Tensor, ctx: TokenContext) -> Tensor:
        _, _, v = split_qkv(block, block.ln_1(x))
        out = merge_heads(block, v)
        if not self.keep_residual:
            return out
        y = x[:, :1] + block.ls_1(out)
        return y + block.ls_2(block.mlp(block.ln_2(y)))
