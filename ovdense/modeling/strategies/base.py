"""The strategy contract, its registry and the q/k/v helpers every strategy shares.

A last-block strategy is an :class:`AttentionStrategy`: given the last block of a CLIP image
tower (its own weights, never copied or patched) and the tokens entering it, it computes the
block's output tokens. Formulas use ``s = head_dim ** -0.5`` and per-head ``q, k, v`` from the
block's input projection of ``ln_1(x)`` (:func:`split_qkv`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...utils.registry import Registry

__all__ = [
    "REGIONS",
    "STRATEGIES",
    "TEXT_EMBEDS",
    "AttentionBlock",
    "AttentionStrategy",
    "TokenContext",
    "build_strategy",
    "list_strategies",
    "merge_heads",
    "split_qkv",
]

#: The last block a strategy runs: open_clip's ``ResidualAttentionBlock`` or an object with its
#: interface (``ln_1``, ``attn.in_proj_weight`` / ``in_proj_bias`` / ``out_proj`` / ``num_heads``,
#: optional ``qk_transform``, ``ls_1``, ``mlp``, ``ln_2``, ``ls_2``), e.g.
#: :class:`~ovdense.modeling.backbones.eva_vit.EvaBlockView`, which is not an ``nn.Module``.
#: Read by attribute name (open_clip is untyped), hence ``Any``.
AttentionBlock = Any

#: ``TokenContext.extras`` key of the vocabulary's name embeddings ``[N, D]`` (L2-normalised),
#: passed by the segmentor to a strategy whose ``needs_text`` is true.
TEXT_EMBEDS = "text_embeds"

#: ``TokenContext.extras`` key of the crops' class-agnostic region maps ``[B, H, W]`` (int; one
#: label per region, see :func:`ovdense.utils.regions.masks_to_region_map`), at the crops' size,
#: passed by the segmentor (from its ``mask_source``) to a strategy whose ``needs_regions`` is
#: true (CorrCLIP).
REGIONS = "regions"

STRATEGIES: Registry[type[AttentionStrategy]] = Registry("attention strategy")
STRATEGIES.__doc__ = """Registered objects are AttentionStrategy subclasses; calling one with
``(block, x [B, 1+N, C], ctx)`` returns the last block's output tokens ``[B, 1+N', C]`` on the
grid ``strategy.output_grid(ctx.grid, (H, W))`` (``ctx.grid`` set to it). The registry sets the
class's ``name``."""


@dataclass
class TokenContext:
    """What a strategy may need besides the tokens.

    Attributes:
        grid: ``(gh, gw)`` patch grid of the current input (token ``1 + i * gw + j`` is patch
            ``(i, j)``); a strategy that outputs tokens on another grid updates it.
        images: the normalised input images ``[B, 3, H, W]`` (for strategies that consult another
            model, e.g. ProxyCLIP's vision foundation model).
        extras: free-form values a caller passes through to a strategy (e.g.
            :data:`TEXT_EMBEDS` for strategies with :attr:`AttentionStrategy.needs_text`).
        block_outputs: output tokens ``[B, 1 + N, C]`` (batch first) of the earlier blocks a
            strategy asked for (:meth:`AttentionStrategy.trunk_taps`), by 0-based block index
            (``-1``: the tokens entering block 0); filled by the backbone's trunk.
        block_view: block index -> that block with the interface of :data:`AttentionBlock`
            (set by the backbone's trunk; for strategies that read earlier blocks' attention).
        project: the tower's final norm and projection into the joint space, ``[..., C] ->
            [..., D]`` (set by the backbone's trunk; for strategies that classify an
            intermediate result, e.g. ResCLIP's semantic feedback).
        fused_branches: ``[(weight, patch tokens [B, N', C])]`` a strategy adds: further
            branches on the output grid whose projections the backbone adds, weighted, to the
            projection of the returned patch tokens (``project(out) + Σ w · project(branch)``;
            CorrCLIP's spatial and semantic branches, fused after the final norm). Empty for
            most strategies.
    """

    grid: tuple[int, int]
    images: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    block_outputs: dict[int, Tensor] = field(default_factory=dict)
    block_view: Callable[[int], AttentionBlock] | None = None
    project: Callable[[Tensor], Tensor] | None = None
    fused_branches: list[tuple[float, Tensor]] = field(default_factory=list)

    def images01(
        self, mean: Sequence[float], std: Sequence[float], who: str = "This strategy"
    ) -> Tensor:
        """The ``[0, 1]`` images ``[B, 3, H, W]`` behind :attr:`images` (CLIP-normalised):
        normalisation undone with ``extras["clip_mean"]`` / ``extras["clip_std"]`` when a
        caller passes them, else ``mean`` / ``std`` (the strategy's CLIP's); for strategies that
        give the images to another model (a VFM). ``who`` names the caller in the error."""
        if self.images is None:
            raise RuntimeError(
                f"{who} needs the input images (ctx.images); run it through a dense backbone "
                "(dense_backbone_for(clip, strategy)), which passes them."
            )
        x = self.images
        m = torch.as_tensor(self.extras.get("clip_mean", mean), device=x.device, dtype=x.dtype)
        s = torch.as_tensor(self.extras.get("clip_std", std), device=x.device, dtype=x.dtype)
        return x * s.view(1, 3, 1, 1) + m.view(1, 3, 1, 1)


def _attn_params(
    block: AttentionBlock,
) -> tuple[Tensor, Tensor | None, Callable[[Tensor], Tensor], int]:
    """``(in_proj_weight [3C, C], in_proj_bias [3C] or None, out_proj, num_heads)`` of a block
    with open_clip's ``ResidualAttentionBlock`` interface (or a view of another tower's block,
    e.g. :class:`~ovdense.modeling.backbones.eva_vit.EvaBlockView`)."""
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


def split_qkv(block: AttentionBlock, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
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


def merge_heads(block: AttentionBlock, o: Tensor) -> Tensor:
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

    Subclasses implement :meth:`attend` and set ``default_keep_residual``; registering one
    (``@STRATEGIES.register("kk")``) sets its ``name``.
    """

    name: str = ""
    default_keep_residual: bool = True
    #: whether the strategy needs the vocabulary's name embeddings (``ctx.extras[TEXT_EMBEDS]``):
    #: its dense features then depend on the vocabulary (ResCLIP's semantic feedback).
    needs_text: bool = False
    #: whether the strategy reads class-agnostic region maps (``ctx.extras[REGIONS]``), which a
    #: segmentor with a ``mask_source`` passes (CorrCLIP).
    needs_regions: bool = False
    #: why the strategy cannot be traced by ``torch.export`` / ONNX (data-dependent control
    #: flow, e.g. CorrCLIP's mask merging), or ``None`` when it can.
    not_exportable: str | None = None

    def __init__(self, keep_residual: bool | None = None) -> None:
        super().__init__()
        self.keep_residual = (
            self.default_keep_residual if keep_residual is None else bool(keep_residual)
        )

    def attend(self, q: Tensor, k: Tensor, v: Tensor, ctx: TokenContext) -> Tensor:
        """Per-head attention output ``[B, heads, L, hd]`` from ``q, k, v`` of the same shape."""
        raise NotImplementedError

    def attention_terms(
        self, q: Tensor, k: Tensor, ctx: TokenContext
    ) -> list[tuple[Tensor, Tensor | None]]:
        """The attention weights as ``[(S_i, bias_i)]`` with ``A = sum_i softmax(S_i + bias_i)``:
        ``S_i`` ``[B, heads, L, L]`` the similarity logits, ``bias_i`` an additive prior
        broadcastable to them (or ``None``). For plug-ins that reshape a strategy's logits
        before its softmax (ResCLIP); strategies whose weights are not of this form raise
        ``NotImplementedError``."""
        raise NotImplementedError(
            f"The strategy {self.name or type(self).__name__!r} does not expose its attention "
            "as softmax terms."
        )

    def trunk_taps(self, num_blocks: int) -> tuple[int, ...]:
        """0-based indices of the earlier blocks (``< num_blocks - 1``) whose output tokens the
        strategy reads from ``ctx.block_outputs`` (``-1``: the tokens entering block 0); none by
        default."""
        return ()

    def output_grid(self, grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, int]:
        """The patch grid of the tokens :meth:`forward` returns for images of ``image_size``
        ``(H, W)`` whose tower grid is ``grid``: ``grid`` itself unless a strategy changes it
        (ProxyCLIP outputs on its vision foundation model's grid)."""
        return tuple(grid)  # type: ignore[return-value]

    def forward(self, block: AttentionBlock, x: Tensor, ctx: TokenContext) -> Tensor:
        """Run the last block on ``x``, ``[B, 1 + N, C]`` batch first -> ``[B, 1 + N, C]``.

        A strategy may return tokens on another patch grid (ProxyCLIP works on its vision
        foundation model's grid); it then sets ``ctx.grid`` to that grid.
        """
        q, k, v = split_qkv(block, block.ln_1(x))
        return self.finish_block(block, x, self.attend(q, k, v, ctx))

    def finish_block(self, block: AttentionBlock, x: Tensor, o: Tensor) -> Tensor:
        """The block's output from the per-head attention output ``o`` ``[B, heads, L, hd]``:
        ``out_proj`` and, when ``keep_residual``, the residual and FFN of the block input
        ``x``."""
        out = merge_heads(block, o)
        if not self.keep_residual:
            return out
        y = x + block.ls_1(out)
        return y + block.ls_2(block.mlp(block.ln_2(y)))

    def extra_repr(self) -> str:
        return f"keep_residual={self.keep_residual}"


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
