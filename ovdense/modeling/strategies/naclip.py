"""``naclip``: NACLIP (Hajimiri et al., WACV 2025) neighbourhood attention."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ..layers import grid_cached
from .base import STRATEGIES, AttentionStrategy, TokenContext

__all__ = ["NACLIPAttention", "gaussian_window_bias"]


def gaussian_window_bias(
    grid: tuple[int, int],
    std: float,
    num_prefix_tokens: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """NACLIP's neighbourhood bias Ω: ``[P + N, P + N]`` with
    ``Ω[(i, j), (k, l)] = exp(-((i - k)² + (j - l)²) / (2 std²))`` over patches, 0 for prefix rows
    and columns."""
    gh, gw = grid
    ii, jj = torch.meshgrid(
        torch.arange(gh, dtype=torch.float64),
        torch.arange(gw, dtype=torch.float64),
        indexing="ij",
    )
    coords = torch.stack([ii.flatten(), jj.flatten()], dim=1)
    # squared distances by differences (exact integers; cdist has no ONNX export)
    d2 = (coords[:, None, :] - coords[None, :, :]).pow(2).sum(dim=-1)
    omega = torch.exp(-d2 / (2.0 * std * std))
    n = gh * gw + num_prefix_tokens
    out = torch.zeros(n, n, dtype=torch.float64)
    out[num_prefix_tokens:, num_prefix_tokens:] = omega
    return out.to(device=device, dtype=dtype or torch.float32)


@STRATEGIES.register("naclip")
class NACLIPAttention(AttentionStrategy):
    """NACLIP (Hajimiri et al., WACV 2025): ``softmax(k kᵀ s + Ω)`` with a Gaussian
    neighbourhood bias Ω (``std`` in patches, cached per grid), reduced block.

    Args:
        std: standard deviation of the Gaussian window, in patches (paper: 5).
    """

    default_keep_residual = False

    def __init__(self, std: float = 5.0, keep_residual: bool | None = None) -> None:
        super().__init__(keep_residual)
        if std <= 0:
            raise ValueError(f"NACLIP std must be > 0, got {std}.")
        self.std = float(std)
        self._cache: dict[tuple, Tensor] = {}

    def bias(
        self, grid: tuple[int, int], device: torch.device | str | None, dtype: torch.dtype | None
    ) -> Tensor:
        """Ω ``[1 + gh * gw, 1 + gh * gw]`` for a grid (cached per grid, device and dtype;
        computed afresh while tracing for ``torch.export``)."""
        return grid_cached(
            self._cache,
            (tuple(grid), str(device), dtype),
            lambda: gaussian_window_bias(grid, self.std, device=device, dtype=dtype),
            max_entries=16,
        )

    def attend(self, q: Tensor, k: Tensor, v: Tensor, ctx: TokenContext) -> Tensor:
        omega = self.bias(ctx.grid, k.device, k.dtype)
        return F.scaled_dot_product_attention(k, k, v, attn_mask=omega)

    def attention_terms(self, q: Tensor, k: Tensor, ctx: TokenContext) -> list:
        omega = self.bias(ctx.grid, k.device, k.dtype)
        return [(k @ k.transpose(-1, -2) * k.shape[-1] ** -0.5, omega)]

    def extra_repr(self) -> str:
        return f"std={self.std}, keep_residual={self.keep_residual}"
