"""The shared base of the dense backbones over a CLIP image tower.

:class:`DenseTowerBackbone` holds everything that does not depend on the tower's architecture:
the last-block strategy, ``pos_interp``, ``out_indices``, the per-grid position-embedding cache
and the forward (embed -> every block but the last -> strategy on the last block -> projection
into the joint space -> L2 normalisation). Its siblings adapt one tower each:

- :class:`~ovdense.modeling.backbones.clip_vit.DenseCLIPBackbone`: open_clip's
  ``VisionTransformer``;
- :class:`~ovdense.modeling.backbones.eva_vit.DenseEVABackbone`: open_clip's EVA02-CLIP tower
  (a timm ``Eva`` inside ``TimmModel``).

:func:`~ovdense.modeling.backbones.clip_vit.dense_backbone_for` picks the one that fits a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import Tensor, nn

from ..layers import POS_INTERP_MODES, grid_cached, interpolate_pos_embed, is_tracing
from ..strategies import AttentionStrategy, TokenContext, build_strategy
from .base import DenseBackbone, DenseFeatures, normalize_out_indices

__all__ = ["OPENAI_MEAN", "OPENAI_STD", "DenseTowerBackbone"]

OPENAI_MEAN: tuple[float, float, float] = tuple(OPENAI_DATASET_MEAN)
OPENAI_STD: tuple[float, float, float] = tuple(OPENAI_DATASET_STD)


class DenseTowerBackbone(DenseBackbone):
    """A CLIP image tower whose last block is computed by an :class:`AttentionStrategy`.

    Args:
        visual: the image tower (shared, not copied), stored as ``self.visual``.
        strategy: a registered strategy name (see
            :func:`~ovdense.modeling.strategies.list_strategies`) or an object.
        strategy_kwargs: constructor arguments for a named strategy (e.g. ``{"std": 5.0}``).
        pos_interp: ``"size"`` or ``"scale_factor"`` position-embedding interpolation (see
            :func:`~ovdense.modeling.layers.interpolate_pos_embed`).
        out_indices: block indices (negative allowed) whose output tokens are returned as
            ``intermediates["block{i}"]``.
        patch_size: ``(ph, pw)`` of the tower (square patches only).
        grid_size: ``(gh0, gw0)``, the native patch grid (that of the position embedding).
        embed_dim: ``D``, the joint image-text space.
        width: ``C``, the transformer width.

    Subclasses check their tower before calling this constructor and implement
    :attr:`blocks`, :meth:`native_pos_embed`, :meth:`embed_tokens`, :meth:`forward_trunk`,
    :meth:`last_block` and :meth:`project`.
    """

    def __init__(
        self,
        visual: nn.Module,
        strategy: str | AttentionStrategy = "vanilla",
        strategy_kwargs: dict[str, Any] | None = None,
        pos_interp: str = "size",
        out_indices: Sequence[int] = (),
        *,
        patch_size: Sequence[int],
        grid_size: Sequence[int],
        embed_dim: int,
        width: int,
    ) -> None:
        super().__init__()
        if pos_interp not in POS_INTERP_MODES:
            raise ValueError(f"pos_interp must be one of {POS_INTERP_MODES}, got {pos_interp!r}.")
        # open_clip's image tower (open_clip is untyped): its parts are read by name
        self.visual: Any = visual
        self.strategy = build_strategy(strategy, **(strategy_kwargs or {}))
        self.pos_interp = pos_interp
        self.out_indices = normalize_out_indices(out_indices, len(self.blocks))
        ph, pw = patch_size
        if ph != pw:
            raise ValueError("Only square patches are supported.")
        self.patch_size = int(ph)
        gh0, gw0 = grid_size
        self.grid_size = (int(gh0), int(gw0))
        self.embed_dim = int(embed_dim)
        self.width = int(width)
        cfg = getattr(visual, "preprocess_cfg", None) or {}
        self.mean = tuple(cfg.get("mean", OPENAI_MEAN))
        self.std = tuple(cfg.get("std", OPENAI_STD))
        self._pos_cache: dict[tuple, Tensor] = {}

    # -- what each tower provides -----------------------------------------------------------------
    @property
    def blocks(self) -> nn.ModuleList:  # pragma: no cover - abstract
        """The tower's transformer blocks, in order."""
        raise NotImplementedError

    def native_pos_embed(self) -> Tensor | None:  # pragma: no cover - abstract
        """The absolute position embedding ``[1 + gh0 * gw0, C]`` on the native grid, or
        ``None`` when the tower has none."""
        raise NotImplementedError

    def embed_tokens(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch + CLS + position embedding (and the tower's pre-norm): ``[B, 1 + gh*gw, C]``
        and the grid ``(gh, gw)``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def forward_trunk(self, x: Tensor, ctx: TokenContext) -> tuple[Tensor, dict[str, Tensor]]:
        """Every block but the last on ``x`` (``[B, 1 + N, C]``, grid ``ctx.grid``): the tokens
        ``[B, 1 + N, C]`` and the requested intermediates ``{"block{i}": [B, C, gh, gw]}``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def last_block(self, x: Tensor, ctx: TokenContext) -> Any:
        """The last block, with open_clip's ``ResidualAttentionBlock`` interface that the
        strategies use (``ln_1``, ``attn``, ``ls_1``, ``mlp``, ``ln_2``, ``ls_2``)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def project(self, tokens: Tensor) -> Tensor:
        """Final norm and projection: ``[..., C]`` -> ``[..., D]`` (the joint text space)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def block_view(self, index: int, ctx: TokenContext) -> Any:
        """Block ``index`` with the interface the strategies use (see :meth:`last_block`);
        open_clip's blocks are their own view."""
        return self.blocks[index]

    # -- shared -----------------------------------------------------------------------------------
    def open_trunk(self, ctx: TokenContext) -> frozenset[int]:
        """Prepare ``ctx`` for the strategy before the trunk runs (``ctx.project``,
        ``ctx.block_view``) and return the block indices whose outputs the trunk must record
        into ``ctx.block_outputs`` (the strategy's :meth:`~AttentionStrategy.trunk_taps`)."""
        ctx.project = self.project
        ctx.extras.setdefault("patch_size", self.patch_size)
        ctx.block_view = lambda i: self.block_view(i, ctx)
        taps = frozenset(int(i) for i in self.strategy.trunk_taps(self.num_blocks))
        bad = sorted(i for i in taps if not -1 <= i < self.num_blocks - 1)
        if bad:
            raise ValueError(
                f"The strategy {self.strategy.name!r} reads blocks {bad}, but this tower has "
                f"{self.num_blocks} blocks (earlier blocks are 0..{self.num_blocks - 2}, -1 the "
                "tokens entering block 0); set its "
                "layer indices for this tower."
            )
        return taps

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def pos_embed(self, grid: tuple[int, int], dtype: torch.dtype) -> Tensor | None:
        """Position embedding ``[1 + gh * gw, C]`` for a patch grid (cached per grid), or
        ``None`` for a tower without one."""
        pe = self.native_pos_embed()
        if pe is None:
            return None
        return self._interp_pos_embed(pe, grid, dtype)

    def _interp_pos_embed(self, pe: Tensor, grid: tuple[int, int], dtype: torch.dtype) -> Tensor:
        """``pe`` (``[1 + gh0 * gw0, C]`` on the native grid) interpolated to ``grid``: cached
        per grid and weight version; recomputed with autograd while ``pe`` trains, and on every
        call while ``torch.export`` / ``torch.compile`` trace (the graph then computes it from
        the parameter)."""
        native = self.grid_size

        def compute() -> Tensor:
            return interpolate_pos_embed(pe, native, grid, self.pos_interp).to(dtype)

        if (pe.requires_grad and torch.is_grad_enabled()) or is_tracing(pe):
            return compute()
        key = (tuple(grid), pe.device, dtype, pe._version, pe.data_ptr())
        return grid_cached(self._pos_cache, key, compute)

    def forward_tokens(
        self, images: Tensor, extras: dict[str, Any] | None = None
    ) -> tuple[Tensor, tuple[int, int], dict[str, Tensor]]:
        """Tokens after the strategy's last block (before the final norm): ``[B, 1 + N, C]``,
        their grid (the strategy's, see ``AttentionStrategy.output_grid``) and the
        intermediates. A strategy's ``fused_branches`` (CorrCLIP) are not in these tokens:
        :meth:`forward` adds them after the projection."""
        x, grid, inter, _ = self._run(images, extras)
        return x, grid, inter

    def _run(
        self, images: Tensor, extras: dict[str, Any] | None
    ) -> tuple[Tensor, tuple[int, int], dict[str, Tensor], TokenContext]:
        """:meth:`forward_tokens` and the strategy's context (its ``fused_branches``)."""
        x, grid = self.embed_tokens(images)
        # strategies that consult another model need the un-normalised image (ProxyCLIP)
        extras = {"clip_mean": self.mean, "clip_std": self.std, **(extras or {})}
        ctx = TokenContext(grid=grid, images=images, extras=extras)
        x, inter = self.forward_trunk(x, ctx)
        x = self.strategy(self.last_block(x, ctx), x, ctx)
        grid = ctx.grid  # the strategy may output tokens on another grid
        if self.num_blocks - 1 in self.out_indices:
            inter[f"block{self.num_blocks - 1}"] = self._to_nchw(x, grid)
        return x, grid, inter, ctx

    @staticmethod
    def _to_nchw(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        b, _, c = tokens.shape
        return tokens[:, 1:].transpose(1, 2).reshape(b, c, grid[0], grid[1])

    def forward(self, images: Tensor, extras: dict[str, Any] | None = None) -> DenseFeatures:
        """Args:
            images: ``[B, 3, H, W]`` normalised with ``self.mean``/``self.std``.
            extras: values passed to the strategy (``TokenContext.extras``).

        Returns:
            :class:`DenseFeatures` with ``dense`` ``[B, D, gh, gw]`` (L2-normalised; the grid is
            ``(H // p, W // p)`` unless the strategy outputs on another one) and
            ``global_embed`` ``[B, D]`` (the CLS token through the same last block) and
            ``dense_norm`` ``[B, 1, gh, gw]`` (the norms the normalisation divided by). A
            strategy's ``fused_branches`` are projected and added to the patch tokens' projection
            (weighted) before the normalisation.
        """
        tokens, grid, inter, ctx = self._run(images, extras)
        x = self.project(tokens)
        if ctx.fused_branches:
            patches = x[:, 1:]
            for weight, branch in ctx.fused_branches:
                patches = patches + weight * self.project(branch)
            x = torch.cat([x[:, :1], patches], dim=1)
        dense = x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, grid[0], grid[1])
        return DenseFeatures(
            dense=F.normalize(dense, dim=1),
            stride=images.shape[-2] // grid[0],
            global_embed=F.normalize(x[:, 0], dim=-1),
            intermediates=inter,
            dense_norm=dense.norm(dim=1, keepdim=True).clamp_min(1e-12),
        )

    def extra_repr(self) -> str:
        return f"pos_interp={self.pos_interp!r}"
