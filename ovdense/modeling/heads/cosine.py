"""Training-free segmentation head: cosine similarity between pixels and class names."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import SEG_HEADS

__all__ = ["CosineSegHead", "max_over_synonyms"]


@SEG_HEADS.register("cosine")
class CosineSegHead(nn.Module):
    """``logits[b, n, y, x] = <dense[b, :, y, x], embeds[n]>`` (both L2-normalised: cosines).

    Tensor-in / tensor-out so other models can mount it: ``forward(dense [B, D, h, w],
    embeds [N, D]) -> [B, N, h, w]``. Registered as ``"cosine"`` in :data:`SEG_HEADS` (the
    default head of every segmentor).
    """

    def forward(self, dense: Tensor, embeds: Tensor) -> Tensor:
        if dense.shape[1] != embeds.shape[1]:
            raise ValueError(
                f"Feature dim {dense.shape[1]} != text embedding dim {embeds.shape[1]}: the "
                "image and text towers come from different models."
            )
        return torch.einsum("bdhw,nd->bnhw", dense, embeds.to(dense.dtype))


def max_over_synonyms(name_scores: Tensor, name_to_class: Tensor, num_classes: int) -> Tensor:
    """Class scores as the max over each class's names.

    Args:
        name_scores: ``[B, N, ...]`` one score map per name.
        name_to_class: ``[N]`` int64 class of each name.
        num_classes: ``C``.

    Returns:
        ``[B, C, ...]``.
    """
    if name_scores.shape[1] == num_classes:
        return name_scores  # one name per class: identity (names are stored class by class)
    shape = list(name_scores.shape)
    shape[1] = num_classes
    index = name_to_class.view(1, -1, *([1] * (name_scores.ndim - 2))).expand_as(name_scores)
    out = name_scores.new_empty(shape)
    return out.scatter_reduce_(1, index, name_scores, reduce="amax", include_self=False)
