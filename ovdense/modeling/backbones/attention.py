"""Last-block attention strategies: how a CLIP ViT's final block turns tokens into dense features.

Every training-free dense-CLIP method of the MaskCLIP / SCLIP / ClearCLIP / NACLIP family changes
only the last transformer block. Each is an :class:`AttentionStrategy`: a small object that, given
the block's own weights, computes the block's output tokens. The CLIP model is never copied or
patched. Formulas (``s = head_dim ** -0.5``; q, k, v from the block's fused input projection of
``ln_1(x)``):

=========== ====================================== =========================
strategy    attention weights A                    residual + FFN kept?
=========== ====================================== =========================
vanilla     softmax(q kᵀ s)                        yes
maskclip    identity (output = out_proj(v))        yes
sclip       softmax(q qᵀ s) + softmax(k kᵀ s)      yes
clearclip   softmax(q qᵀ s)                        no: output = out_proj(A v)
naclip      softmax(k kᵀ s + Ω), Ω Gaussian        no
=========== ====================================== =========================

Adding a method (GEM, SC-CLIP, ...) is one subclass implementing :meth:`AttentionStrategy.attend`
and registered with ``@STRATEGIES.register("name")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...utils.registry import Registry

__all__ = [
    "STRATEGIES",
    "AttentionStrategy",
    "TokenContext",
    "build_strategy",
    "list_strategies",
    "gaussian_window_bias",
]

STRATEGIES: Registry[type[AttentionStrategy]] = Registry("attention strategy")
STRATEGIES.__doc__ = """Registered objects are AttentionStrategy subclasses; calling one with
``(block, x [B, 1+N, C], ctx)`` returns the last block's output tokens ``[B, 1+N, C]``."""


@dataclass
class TokenContext:
    """What a strategy may need besides the tokens.

    Attributes:
        grid: ``(gh, gw)`` patch grid of the current input (token ``1 + i * gw + j`` is patch
            ``(i, j)``); a strategy that outputs tokens on another grid updates it.
        images: the normalised input images ``[B, 3, H, W]`` (for strategies that consult another
            model, e.g. ProxyCLIP's vision foundation model).
        extras: free-form values a caller passes through to a strategy.
    """

    grid: tuple[int, int]
    images: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def _attn_params(block: nn.Module) -> tuple[Tensor, Tensor | None, nn.Linear, int]:
    attn = block.attn
    for flag in ("scaled_cosine", "scale_heads"):
        if getattr(attn, flag, False):
            raise ValueError(
                f"Dense strategies do not support attention blocks with {flag}=True "
                f"(open_clip {type(attn).__name__}); use a standard CLIP ViT."
            )
    if not isinstance(getattr(attn, "ln_q", nn.Identity()), nn.Identity):
        raise ValueError("Dense strategies do not support attention blocks with qk_norm.")
    weight = attn.in_proj_weight
    if weight is None:
        raise ValueError("Attention with separate q/k/v projections is not supported.")
    return weight, attn.in_proj_bias, attn.out_proj, attn.num_heads


def split_qkv(block: nn.Module, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Project ``h = ln_1(x)`` (``[B, L, C]``) to per-head ``q, k, v``, each
    ``[B, heads, L, C / heads]``.

    A block may define ``qk_transform(q, k) -> (q, k)``, applied after the projection: towers
    whose attention transforms q and k by position (the rotary embeddings of EVA02, see
    :class:`~ovdense.modeling.backbones.eva_vit.EvaBlockView`) expose it so that every strategy
    sees the q and k the tower's own attention uses.
    """
    weight, bias, _, heads = _attn_params(block)
    b, length, c = h.shape
    qkv = F.linear(h, weight, bias).reshape(b, length, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    qk_transform = getattr(block, "qk_transform", None)
    if qk_transform is not None:
        q, k = qk_transform(q, k)
    return q, k, v


def merge_heads(block: nn.Module, o: Tensor) -> Tensor:
    """``[B, heads, L, hd]`` -> ``out_proj`` applied, ``[B, L, C]``."""
    _, _, out_proj, _ = _attn_params(block)
    b, heads, length, hd = o.shape
    o = o.transpose(1, 2).reshape(b, length, heads * hd)
    return out_proj(o)


class AttentionStrategy(nn.Module):
    """Computes a ViT last block with modified attention.

    An ``nn.Module`` so that strategies holding models or buffers (e.g. ProxyCLIP's vision
    foundation model) move with the backbone (``.to(device)``); most hold no parameters.

    Args:
        keep_residual: keep the block's residual connection and FFN (``True``) or return only
            ``out_proj(A v)`` (``False``, the "reduced" block). ``None`` uses the method's default.

    Subclasses implement :meth:`attend` and set ``default_keep_residual``.
    """

    name: str = ""
    default_keep_residual: bool = True

    def __init__(self, keep_residual: bool | None = None) -> None:
        super().__init__()
        self.keep_residual = (
            self.default_keep_residual if keep_residual is None else bool(keep_residual)
        )

    def attend(self, q: Tensor, k: Tensor, v: Tensor, ctx: TokenContext) -> Tensor:
        """Per-head attention output ``[B, heads, L, hd]`` from ``q, k, v`` of the same shape."""
        raise NotImplementedError

    def forward(self, block: nn.Module, x: Tensor, ctx: TokenContext) -> Tensor:
        """Run the last block on ``x``, ``[B, 1 + N, C]`` batch first -> ``[B, 1 + N, C]``.

        A strategy may return tokens on another patch grid (ProxyCLIP works on its vision
        foundation model's grid); it then sets ``ctx.grid`` to that grid.
        """
        q, k, v = split_qkv(block, block.ln_1(x))
        out = merge_heads(block, self.attend(q, k, v, ctx))
        if not self.keep_residual:
            return out
        y = x + block.ls_1(out)
        return y + block.ls_2(block.mlp(block.ln_2(y)))

    def extra_repr(self) -> str:
        return f"keep_residual={self.keep_residual}"


@STRATEGIES.register("vanilla")
class VanillaAttention(AttentionStrategy):
    """CLIP's own last block: ``softmax(q kᵀ s) v``, residual and FFN kept."""

    name = "vanilla"

    def attend(self, q: Tensor, k: Tensor, v: Tensor, ctx: TokenContext) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v)


@STRATEGIES.register("maskclip")
class MaskCLIPAttention(AttentionStrategy):
    """MaskCLIP (Zhou et al., ECCV 2022): the value path, each token attends only to itself."""

    name = "maskclip"

    def attend(self, q: Tensor, k: Tensor, v: Tensor, ctx: TokenContext) -> Tensor:
        return v


@STRATEGIES.register("sclip")
class SCLIPAttention(AttentionStrategy):
    """SCLIP (Wang et al., ECCV 2024) correlative self-attention:
    ``softmax(q qᵀ s) + softmax(k kᵀ s)``, residual and FFN kept."""

    name = "sclip"

    def attend(self, q: Tensor, k: Tensor, v: Tensor, ctx: TokenContext) -> Tensor:
        return F.scaled_dot_product_attention(q, q, v) + F.scaled_dot_product_attention(k, k, v)


@STRATEGIES.register("clearclip")
class ClearCLIPAttention(AttentionStrategy):
    """ClearCLIP (Lan et al., ECCV 2024): q-q attention, residual and FFN dropped."""

    name = "clearclip"
    default_keep_residual = False

    def attend(self, q: Tensor, k: Tensor, v: Tensor, ctx: TokenContext) -> Tensor:
        return F.scaled_dot_product_attention(q, q, v)


def gaussian_window_bias(
    grid: tuple[int, int], std: float, num_prefix_tokens: int = 1, device=None, dtype=None
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
    d2 = torch.cdist(coords, coords).pow(2)
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

    name = "naclip"
    default_keep_residual = False

    def __init__(self, std: float = 5.0, keep_residual: bool | None = None) -> None:
        super().__init__(keep_residual)
        if std <= 0:
            raise ValueError(f"NACLIP std must be > 0, got {std}.")
        self.std = float(std)
        self._cache: dict[tuple, Tensor] = {}

    def bias(self, grid: tuple[int, int], device, dtype) -> Tensor:
        key = (tuple(grid), str(device), dtype)
        if key not in self._cache:
            if len(self._cache) > 16:
                self._cache.clear()
            self._cache[key] = gaussian_window_bias(grid, self.std, device=device, dtype=dtype)
        return self._cache[key]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, ctx: TokenContext) -> Tensor:
        omega = self.bias(ctx.grid, k.device, k.dtype)
        return F.scaled_dot_product_attention(k, k, v, attn_mask=omega)

    def extra_repr(self) -> str:
        return f"std={self.std}, keep_residual={self.keep_residual}"


def list_strategies() -> list[str]:
    """Names accepted by :func:`build_strategy` (and ``strategy=`` everywhere)."""
    return STRATEGIES.names()


def build_strategy(strategy: str | AttentionStrategy, **kwargs: Any) -> AttentionStrategy:
    """Return a strategy object from a registered name (kwargs go to its constructor) or pass
    an existing one through."""
    if isinstance(strategy, AttentionStrategy):
        if kwargs:
            raise ValueError("strategy_kwargs are only used with a strategy name.")
        return strategy
    if not isinstance(strategy, str):
        raise TypeError(f"strategy must be a name or an AttentionStrategy, got {type(strategy)}.")
    try:
        cls = STRATEGIES.get(strategy)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    return cls(**kwargs)
