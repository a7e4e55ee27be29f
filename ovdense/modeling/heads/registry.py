"""The registry of segmentation heads (the ``head`` slot of a segmentor)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ...utils.registry import Registry

__all__ = ["SEG_HEADS", "build_seg_head", "list_seg_heads"]

SEG_HEADS: Registry[Callable[..., nn.Module]] = Registry("segmentation head")
SEG_HEADS.__doc__ = """Segmentation heads of :class:`~ovdense.modeling.segmentors.Segmentor`
(registering sets the class's ``name``: ``CosineSegHead.name == "cosine"``).

A registered object is an ``nn.Module`` class (or a function returning a module) whose instances
map per-window dense features and class-name embeddings to one score map per name::

    head(dense: Tensor [B, D, h, w], embeds: Tensor [N, D]) -> Tensor [B, N, h, w]

The segmentor multiplies the scores by its ``logit_scale`` before the softmax over names (use
``logit_scale=1`` for a head that returns calibrated logits). Heads see feature-resolution
windows only; resizing, window stitching, synonyms and thresholds are the segmentor's.

A head may declare, as class or instance attributes, that it needs more (the segmentor reads
them and provides; heads without them are called as above):

* ``per_template = True``: ``embeds`` is ``[N, P, D]``, one L2-normalised embedding per name and
  prompt template (:attr:`ClassEmbeddings.template_embeds`), instead of the template average.
* ``intermediate_layers = (i, j, ...)``: 0-based block indices of the image tower; the head is
  called ``head(dense, embeds, intermediates=[block_i [B, W, h, w], ...])`` (patch tokens of
  those blocks' outputs, in that order, CLS dropped), and the segmentor adds the indices to its
  backbone's ``out_indices``.

The output may be finer than the features by a whole factor, the same for both sides
(``[B, N, s*h, s*w]``, e.g. CAT-Seg's decoder answers at 4x); the segmentor upsamples every
window's map to its crop anyway.

A new head is one file::

    @SEG_HEADS.register("my_head")
    class MyHead(nn.Module):
        def forward(self, dense, embeds): ...

and a config that selects it: ``model.head = "my_head"`` (``model.head_kwargs = {...}``) or
``model.head = L(MyHead)(...)``.
"""


def build_seg_head(head: str | nn.Module = "cosine", **kwargs: Any) -> nn.Module:
    """A segmentation head from a registered name (with constructor ``kwargs``) or a module.

    Raises:
        KeyError: an unknown name (the message lists the registered heads).
        TypeError: ``kwargs`` given with a module, or a registered builder that does not return
            an ``nn.Module``.
    """
    if isinstance(head, nn.Module):
        if kwargs:
            raise TypeError(f"head_kwargs {sorted(kwargs)} need a head name, not a module.")
        return head
    built = SEG_HEADS.get(head)(**kwargs)
    if not isinstance(built, nn.Module):
        raise TypeError(f"Head '{head}' built a {type(built).__name__}, not an nn.Module.")
    return built


def list_seg_heads() -> list[str]:
    """Names of the registered segmentation heads."""
    return SEG_HEADS.names()
