"""Dense features from an open_clip ViT image tower."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import Tensor, nn

from ..clip import load_clip
from .attention import AttentionStrategy, TokenContext, VanillaAttention, build_strategy
from .base import (
    DenseBackbone,
    DenseFeatures,
    check_patch_images,
    grid_cached,
    normalize_out_indices,
)
from .pos_embed import POS_INTERP_MODES, interpolate_pos_embed

__all__ = ["DenseCLIPBackbone", "build_clip_backbone", "dense_backbone_for"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


_FAST_BLOCK = VanillaAttention()


def _is_standard(block: nn.Module) -> bool:
    return isinstance(block, ResidualAttentionBlock) and not hasattr(block, "ln_1_kv")


class DenseCLIPBackbone(DenseBackbone):
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
    :class:`~ovdense.modeling.backbones.eva_vit.DenseEVABackbone` (same arguments).
    """

    def __init__(
        self,
        clip: nn.Module,
        strategy: str | AttentionStrategy = "vanilla",
        strategy_kwargs: dict[str, Any] | None = None,
        pos_interp: str = "size",
        out_indices: Sequence[int] = (),
    ) -> None:
        super().__init__()
        visual = getattr(clip, "visual", clip)
        if not isinstance(visual, VisionTransformer):
            raise TypeError(
                "DenseCLIPBackbone needs an open_clip ViT image tower (use dense_backbone_for(clip)"
                " to get the backbone that fits any supported tower, EVA02 included), got "
                f"{type(visual).__name__}."
            )
        if visual.attn_pool is not None:
            raise ValueError("ViT towers with attentional pooling (CoCa) are not supported.")
        if pos_interp not in POS_INTERP_MODES:
            raise ValueError(f"pos_interp must be one of {POS_INTERP_MODES}, got {pos_interp!r}.")
        self.visual = visual
        self.strategy = build_strategy(strategy, **(strategy_kwargs or {}))
        self.pos_interp = pos_interp
        self.out_indices = normalize_out_indices(out_indices, len(visual.transformer.resblocks))
        ph, pw = visual.patch_size
        if ph != pw:
            raise ValueError("Only square patches are supported.")
        self.patch_size = int(ph)
        self.grid_size = tuple(int(g) for g in visual.grid_size)
        self.embed_dim = int(visual.output_dim)
        self.width = int(visual.transformer.width)
        cfg = getattr(visual, "preprocess_cfg", None) or {}
        self.mean = tuple(cfg.get("mean", OPENAI_MEAN))  # type: ignore[assignment]
        self.std = tuple(cfg.get("std", OPENAI_STD))  # type: ignore[assignment]
        self._pos_cache: dict[tuple, Tensor] = {}

    @property
    def num_blocks(self) -> int:
        return len(self.visual.transformer.resblocks)

    def pos_embed(self, grid: tuple[int, int], dtype: torch.dtype) -> Tensor:
        """Position embedding ``[1 + gh * gw, C]`` for a patch grid (cached per grid)."""
        return self._interp_pos_embed(self.visual.positional_embedding, grid, dtype)

    def _interp_pos_embed(self, pe: Tensor, grid: tuple[int, int], dtype: torch.dtype) -> Tensor:
        """``pe`` (``[1 + gh0 * gw0, C]`` on the native grid) interpolated to ``grid``: cached
        per grid and weight version, recomputed with autograd while ``pe`` trains."""
        native = tuple(self.grid_size)
        if pe.requires_grad and torch.is_grad_enabled():
            return interpolate_pos_embed(pe, native, grid, self.pos_interp).to(dtype)
        key = (tuple(grid), pe.device, dtype, pe._version, pe.data_ptr())
        return grid_cached(
            self._pos_cache,
            key,
            lambda: interpolate_pos_embed(pe, native, grid, self.pos_interp).to(dtype),
        )

    def embed_tokens(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch + CLS + position embedding + ``ln_pre``: ``[B, 1 + gh*gw, C]`` and the grid."""
        check_patch_images(images, self.patch_size)
        v = self.visual
        x = v.conv1(images.to(v.conv1.weight.dtype))
        grid = (int(x.shape[-2]), int(x.shape[-1]))
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed(grid, x.dtype)
        x = v.patch_dropout(x)
        return v.ln_pre(x), grid

    def forward_tokens(
        self, images: Tensor, extras: dict[str, Any] | None = None
    ) -> tuple[Tensor, tuple[int, int], dict[str, Tensor]]:
        """Tokens after the strategy's last block (before ``ln_post``): ``[B, 1 + N, C]``."""
        x, grid = self.embed_tokens(images)
        blocks = self.visual.transformer.resblocks
        batch_first = getattr(self.visual.transformer, "batch_first", True)
        inter: dict[str, Tensor] = {}
        if not batch_first:
            x = x.transpose(0, 1)
        # strategies that consult another model need the un-normalised image (ProxyCLIP)
        extras = {"clip_mean": self.mean, "clip_std": self.std, **(extras or {})}
        ctx = TokenContext(grid=grid, images=images, extras=extras)
        for i, blk in enumerate(blocks[:-1]):
            # NOTE: open_clip's standard block runs nn.MultiheadAttention, whose CPU fast path
            # uses unfused bmm; the same block through scaled_dot_product_attention is ~1.2x
            # faster end to end and equal to float precision.
            x = _FAST_BLOCK(blk, x, ctx) if batch_first and _is_standard(blk) else blk(x)
            if i in self.out_indices:
                inter[f"block{i}"] = self._to_nchw(x if batch_first else x.transpose(0, 1), grid)
        if not batch_first:
            x = x.transpose(0, 1)
        x = self.strategy(blocks[-1], x, ctx)
        grid = ctx.grid  # the strategy may output tokens on another grid
        if len(blocks) - 1 in self.out_indices:
            inter[f"block{len(blocks) - 1}"] = self._to_nchw(x, grid)
        return x, grid, inter

    @staticmethod
    def _to_nchw(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        b, _, c = tokens.shape
        return tokens[:, 1:].transpose(1, 2).reshape(b, c, grid[0], grid[1])

    def project(self, tokens: Tensor) -> Tensor:
        """``ln_post`` then ``proj``: ``[..., C]`` -> ``[..., D]`` (the joint text space)."""
        x = self.visual.ln_post(tokens)
        if self.visual.proj is not None:
            x = x @ self.visual.proj
        return x

    def forward(self, images: Tensor, extras: dict[str, Any] | None = None) -> DenseFeatures:
        """Args:
            images: ``[B, 3, H, W]`` normalised with ``self.mean``/``self.std``.

        Returns:
            :class:`DenseFeatures` with ``dense`` ``[B, D, H // p, W // p]`` (L2-normalised).
        """
        tokens, grid, inter = self.forward_tokens(images, extras)
        x = self.project(tokens)
        dense = x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, grid[0], grid[1])
        return DenseFeatures(
            dense=F.normalize(dense, dim=1),
            stride=images.shape[-2] // grid[0],
            global_embed=F.normalize(x[:, 0], dim=-1),
            intermediates=inter,
        )

    def extra_repr(self) -> str:
        return f"pos_interp={self.pos_interp!r}"


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
) -> DenseCLIPBackbone:
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


def dense_backbone_for(
    clip: nn.Module,
    strategy: str | AttentionStrategy = "vanilla",
    strategy_kwargs: dict[str, Any] | None = None,
    pos_interp: str = "size",
    out_indices: Sequence[int] = (),
) -> DenseCLIPBackbone:
    """The dense backbone that fits ``clip``'s image tower (the model or its ``.visual``):
    :class:`~ovdense.modeling.backbones.eva_vit.DenseEVABackbone` for an EVA02-CLIP tower
    (open_clip ``EVA02-B-16``, ``EVA02-L-14-336``, ...), else :class:`DenseCLIPBackbone`.
    Arguments as for :class:`DenseCLIPBackbone`.
    """
    from .eva_vit import DenseEVABackbone, is_eva_tower

    cls = DenseEVABackbone if is_eva_tower(clip) else DenseCLIPBackbone
    return cls(
        clip,
        strategy=strategy,
        strategy_kwargs=strategy_kwargs,
        pos_interp=pos_interp,
        out_indices=out_indices,
    )
