"""Dense features from an open_clip ViT image tower, and the builders that pick the dense backbone
fitting any supported tower (this one or its EVA02 sibling, ``eva_vit.py``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import Tensor, nn

from ..clip import load_clip
from ..strategies import AttentionStrategy, TokenContext, VanillaAttention
from .base import check_patch_images
from .eva_vit import DenseEVABackbone, is_eva_tower
from .tower import OPENAI_MEAN, OPENAI_STD, DenseTowerBackbone

__all__ = [
    "OPENAI_MEAN",
    "OPENAI_STD",
    "DenseCLIPBackbone",
    "build_clip_backbone",
    "dense_backbone_for",
]

_FAST_BLOCK = VanillaAttention()


def _is_standard(block: nn.Module) -> bool:
    return isinstance(block, ResidualAttentionBlock) and not hasattr(block, "ln_1_kv")


class DenseCLIPBackbone(DenseTowerBackbone):
    """An open_clip ViT tower whose last block is computed by an :class:`AttentionStrategy`.

    Args:
        clip: an open_clip model (``CLIP``/``CustomTextCLIP``) or its ``.visual`` ViT tower.
            The module is shared, not copied.
        strategy: a registered strategy name (see :func:`list_strategies`) or an object.
        strategy_kwargs: constructor arguments for a named strategy (e.g. ``{"std": 5.0}``).
        pos_interp: ``"size"`` or ``"scale_factor"`` position-embedding interpolation (see
            :func:`interpolate_pos_embed`).
        out_indices: block indices (negative allowed) whose output tokens are returned as
            ``intermediates["block{i}"]``.

    ``forward(images)`` takes ``[B, 3, H, W]`` normalised with ``mean``/``std`` and any
    ``H, W >= patch_size``; trailing pixels that do not fill a patch are dropped (as CLIP's
    patch convolution does).

    For a model with an EVA02-CLIP tower use :func:`dense_backbone_for`, which picks
    :class:`~ovdense.modeling.backbones.eva_vit.DenseEVABackbone` (same arguments; a sibling
    over the same :class:`~ovdense.modeling.backbones.tower.DenseTowerBackbone`).
    """

    def __init__(
        self,
        clip: nn.Module,
        strategy: str | AttentionStrategy = "vanilla",
        strategy_kwargs: dict[str, Any] | None = None,
        pos_interp: str = "size",
        out_indices: Sequence[int] = (),
    ) -> None:
        visual = getattr(clip, "visual", clip)
        if not isinstance(visual, VisionTransformer):
            raise TypeError(
                "DenseCLIPBackbone needs an open_clip ViT image tower (use dense_backbone_for(clip)"
                " to get the backbone that fits any supported tower, EVA02 included), got "
                f"{type(visual).__name__}."
            )
        if visual.attn_pool is not None:
            raise ValueError("ViT towers with attentional pooling (CoCa) are not supported.")
        super().__init__(
            visual,
            strategy,
            strategy_kwargs,
            pos_interp,
            out_indices,
            patch_size=visual.patch_size,
            grid_size=visual.grid_size,
            embed_dim=visual.output_dim,
            width=visual.transformer.width,
        )

    @property
    def blocks(self) -> nn.ModuleList:
        """open_clip's ``transformer.resblocks``."""
        return self.visual.transformer.resblocks

    def native_pos_embed(self) -> Tensor:
        """``visual.positional_embedding``, ``[1 + gh0 * gw0, C]``."""
        return self.visual.positional_embedding

    def embed_tokens(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch + CLS + position embedding + ``ln_pre``: ``[B, 1 + gh*gw, C]`` and the grid."""
        check_patch_images(images, self.patch_size)
        v = self.visual
        x = v.conv1(images.to(v.conv1.weight.dtype))
        # NOTE: no int(): while torch.export traces a dynamic image size these are symbolic
        # (an int() would fix the graph to the example's grid)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self._interp_pos_embed(
            self.native_pos_embed(), grid, x.dtype
        )
        x = v.patch_dropout(x)
        return v.ln_pre(x), grid

    def forward_trunk(self, x: Tensor, ctx: TokenContext) -> tuple[Tensor, dict[str, Tensor]]:
        """open_clip's blocks but the last, batch first in and out."""
        blocks = self.blocks
        taps = self.open_trunk(ctx)
        batch_first = getattr(self.visual.transformer, "batch_first", True)
        inter: dict[str, Tensor] = {}
        if -1 in taps:
            ctx.block_outputs[-1] = x
        if not batch_first:
            x = x.transpose(0, 1)
        for i, blk in enumerate(blocks[:-1]):
            # NOTE: open_clip's standard block runs nn.MultiheadAttention, whose CPU fast path
            # uses unfused bmm; the same block through scaled_dot_product_attention is ~1.2x
            # faster end to end and equal to float precision.
            x = _FAST_BLOCK(blk, x, ctx) if batch_first and _is_standard(blk) else blk(x)
            if i in taps:
                ctx.block_outputs[i] = x if batch_first else x.transpose(0, 1)
            if i in self.out_indices:
                inter[f"block{i}"] = self._to_nchw(
                    x if batch_first else x.transpose(0, 1), ctx.grid
                )
        if not batch_first:
            x = x.transpose(0, 1)
        return x, inter

    def last_block(self, x: Tensor, ctx: TokenContext) -> Any:
        """open_clip's last ``ResidualAttentionBlock`` itself."""
        return self.blocks[-1]

    def project(self, tokens: Tensor) -> Tensor:
        """``ln_post`` then ``proj``: ``[..., C]`` -> ``[..., D]`` (the joint text space)."""
        x = self.visual.ln_post(tokens)
        if self.visual.proj is not None:
            x = x @ self.visual.proj
        return x


def dense_backbone_for(
    clip: nn.Module,
    strategy: str | AttentionStrategy = "vanilla",
    strategy_kwargs: dict[str, Any] | None = None,
    pos_interp: str = "size",
    out_indices: Sequence[int] = (),
) -> DenseTowerBackbone:
    """The dense backbone that fits ``clip``'s image tower (the model or its ``.visual``):
    :class:`~ovdense.modeling.backbones.eva_vit.DenseEVABackbone` for an EVA02-CLIP tower
    (open_clip ``EVA02-B-16``, ``EVA02-L-14-336``, ...), else :class:`DenseCLIPBackbone`.
    Arguments as for :class:`DenseCLIPBackbone`.
    """
    cls = DenseEVABackbone if is_eva_tower(clip) else DenseCLIPBackbone
    return cls(
        clip,
        strategy=strategy,
        strategy_kwargs=strategy_kwargs,
        pos_interp=pos_interp,
        out_indices=out_indices,
    )


def build_clip_backbone(
    model_name: str | None = None,
    pretrained: str | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    config: dict[str, Any] | None = None,
    model: nn.Module | None = None,
    strategy: str | AttentionStrategy = "vanilla",
    strategy_kwargs: dict[str, Any] | None = None,
    pos_interp: str = "size",
    out_indices: Sequence[int] = (),
    device: str | torch.device = "cpu",
) -> DenseTowerBackbone:
    """One-liner: :func:`~ovdense.modeling.clip.load_clip` + :func:`dense_backbone_for`.

    Example::

        backbone = build_clip_backbone("ViT-B-16", "openai", strategy="naclip")
    """
    clip = load_clip(
        model_name, pretrained, checkpoint=checkpoint, config=config, model=model, device=device
    )
    return dense_backbone_for(
        clip,
        strategy=strategy,
        strategy_kwargs=strategy_kwargs,
        pos_interp=pos_interp,
        out_indices=out_indices,
    )
