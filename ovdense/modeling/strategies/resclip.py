"""``resclip``: ResCLIP (Yang et al., CVPR 2025), a plug-in over another strategy's attention.

ResCLIP reshapes the attention of a base strategy (NACLIP in the paper's main results; SCLIP,
ClearCLIP or CLIP's own) whose weights are ``A = Σ_i softmax(S_i + b_i)``
(:meth:`~ovdense.modeling.strategies.base.AttentionStrategy.attention_terms`):

* **RCS** (residual cross-correlation self-attention): ``R``, the mean over intermediate blocks
  ``l ∈ rcs_layers`` (0-based; paper: the 6th to 9th of 12) of their own query-key attention
  ``softmax(q_l k_lᵀ s)``, per head, recomputed from the block's input; then
  ``A ← τ_r ((1 − λ_r) A + λ_r R)`` (no renormalisation: rows sum to ``τ_r`` times the base's).
* **SFR** (semantic feedback refinement): a first pass with RCS alone gives a segmentation of the
  crop (patch features through the tower's projection, cosine with the vocabulary's names,
  bilinear to the crop, PAMR, ``softmax(logit_scale · ·)``; pixels whose top probability is below
  ``temp_thd`` get name 0), the label of each patch being its most frequent pixel label. From the
  patch labels, ``M[a, b] = 1`` when patches ``a`` and ``b`` share a label; with
  ``delete_same_entity`` a pair whose straight path (see :func:`path_is_clear`) leaves the label
  is decayed by ``exp(−d / d_max)`` (``d`` the Chebyshev distance); each row of ``M`` (over the
  flattened patch index) is blurred with a 1-D Gaussian (``sfr_std``), made non-negative and
  normalised to sum 1; CLS row and column 0; ``M ← M / max(M)``. Then each base term becomes
  ``softmax(τ_f ((1 − λ_f) S_i + λ_f M) + b_i)`` before RCS is applied.

Its output is the base's block (reduced or with residual, as the base) with these weights.
SFR makes the dense features depend on the vocabulary: the segmentor passes the name
embeddings (``ctx.extras[TEXT_EMBEDS]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..refiners.pamr import PAMR
from .base import (
    STRATEGIES,
    TEXT_EMBEDS,
    AttentionBlock,
    AttentionStrategy,
    TokenContext,
    build_strategy,
    split_qkv,
)

__all__ = [
    "ResCLIPAttention",
    "feedback_affinity",
    "patch_labels",
    "path_is_clear",
]


def patch_labels(probs: Tensor, patch_size: int, grid: tuple[int, int], thd: float) -> Tensor:
    """ResCLIP's patch labels from pixel probabilities.

    Args:
        probs: ``[B, Q, H, W]`` probabilities over ``Q`` names at the crop's pixels.
        patch_size: pixels per patch side.
        grid: ``(gh, gw)``; pixels beyond ``gh * p`` / ``gw * p`` are ignored.
        thd: pixels whose top probability is below it get label 0.

    Returns:
        ``[B, gh, gw]`` int64: each patch's most frequent pixel label (the smallest among ties).
    """
    b, q = probs.shape[:2]
    gh, gw = grid
    p = patch_size
    top, label = probs.max(dim=1)
    label = label.masked_fill(top < thd, 0)
    label = label[:, : gh * p, : gw * p].reshape(b, gh, p, gw, p)
    label = label.permute(0, 1, 3, 2, 4).reshape(b, gh * gw, p * p)
    counts = torch.zeros(b, gh * gw, q, device=probs.device, dtype=torch.int32)
    counts.scatter_add_(2, label, torch.ones_like(label, dtype=torch.int32))
    return counts.argmax(dim=-1).reshape(b, gh, gw)


def _sample_index(gh: int, gw: int, first: int, last: int, device: torch.device) -> Tensor:
    """The flattened patch index of sample ``i`` (``first <= i < last``) of every pair's path
    (:func:`path_is_clear`): ``[last - first, N, N]`` int64, ``a``'s own index where
    ``i > d(a, b)`` (a sample that is not checked). The coordinates are computed exactly as the
    path check defines them (float32, ``round`` half to even)."""
    n = gh * gw
    idx = torch.arange(n, device=device)
    rows, cols = idx // gw, idx % gw
    steps = torch.maximum(
        (rows[:, None] - rows[None, :]).abs(), (cols[:, None] - cols[None, :]).abs()
    )
    d_max = max(gh, gw) - 1  # the largest Chebyshev distance on the grid
    ts = torch.linspace(0, 1, steps=d_max + 1, device=device)[first:last].view(-1, 1, 1)
    r0, c0 = rows[:, None].float(), cols[:, None].float()
    r1, c1 = rows[None, :].float(), cols[None, :].float()
    r = (r0 * (1 - ts) + r1 * ts).round().long()
    c = (c0 * (1 - ts) + c1 * ts).round().long()
    beyond = torch.arange(first, last, device=device).view(-1, 1, 1) > steps
    return torch.where(beyond, idx[:, None], r * gw + c)


#: Entries ``(image, sample, a, b)`` gathered at once by :func:`_paths_clear` (6 windows of
#: 14 x 14 patches, ViT-B/16 at 224: 3.2 M, one gather).
_GATHER_CHUNK = 1 << 22


def _paths_clear(labels: Tensor) -> Tensor:
    """:func:`path_is_clear` of each label map of a batch ``[B, gh, gw]``: ``[B, N, N]`` bool.

    The samples of all pairs and images are gathered at once (in chunks of samples on large
    grids) instead of one indexing per sample and image.
    """
    b, gh, gw = labels.shape
    n = gh * gw
    total = max(gh, gw)  # d_max + 1 samples
    dev = labels.device
    flat = labels.reshape(b, n)
    start = flat[:, None, :, None]  # [B, 1, N (a), 1]
    clear = torch.ones(b, n, n, dtype=torch.bool, device=dev)
    chunk = max(1, _GATHER_CHUNK // max(1, b * n * n))
    for first in range(0, total, chunk):
        last = min(total, first + chunk)
        index = _sample_index(gh, gw, first, last, dev)
        clear &= (flat[:, index] == start).all(dim=1)
    return clear


def path_is_clear(labels: Tensor) -> Tensor:
    """For every pair of patches ``(a, b)`` of one label map ``[gh, gw]``: ``[N, N]`` bool, true
    when the label is that of ``a`` at every sample ``round(a + (b − a) · i / d_max)``,
    ``i = 0 .. d(a, b)`` (``d`` the Chebyshev distance, ``d_max`` its maximum over all pairs,
    ``round`` half to even, coordinates in float32).

    This is ResCLIP's path check as its code computes it: the samples are spaced by
    ``1 / d_max`` of the segment, so for ``d(a, b) < d_max`` only the part of the segment from
    ``a`` up to ``d(a, b) / d_max`` of its length is checked.
    """
    return _paths_clear(labels[None])[0]


def _distance_decay(gh: int, gw: int, device: torch.device) -> Tensor:
    """``exp(−d(a, b) / d_max)`` ``[N, N]`` float32 of a grid (``d`` the Chebyshev distance,
    ``d_max`` at least 1), ResCLIP's decay of a same-label pair whose path leaves the label."""
    idx = torch.arange(gh * gw, device=device)
    rows, cols = idx // gw, idx % gw
    steps = torch.maximum(
        (rows[:, None] - rows[None, :]).abs(), (cols[:, None] - cols[None, :]).abs()
    ).float()
    d_max = float(max(gh, gw, 2) - 1)  # the largest distance (1 on a 1 x 1 grid: unused)
    return torch.exp(-steps / d_max)


def feedback_affinity(labels: Tensor, std: float, delete_same_entity: bool = True) -> Tensor:
    """ResCLIP's semantic feedback matrix over the patches of a label map.

    Args:
        labels: ``[B, gh, gw]`` patch labels (:func:`patch_labels`).
        std: standard deviation (in flattened patch indices) of the 1-D Gaussian that blurs
            each row.
        delete_same_entity: decay same-label pairs whose path leaves the label
            (:func:`path_is_clear`) by ``exp(−d / d_max)``.

    Returns:
        ``[B, N, N]`` float32, rows summing to 1 (``+ 1e-8`` in the divisor).
    """
    b, gh, gw = labels.shape
    n = gh * gw
    dev = labels.device
    size = min(n, int(6 * std + 1))
    size = size if size % 2 == 1 else size + 1
    offsets = torch.arange(size, device=dev) - size // 2
    kernel = torch.exp(-(offsets**2) / (2 * std**2))
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    flat = labels.reshape(b, n)
    m = (flat[:, :, None] == flat[:, None, :]).float()
    if delete_same_entity:
        m = torch.where(_paths_clear(labels), m, m * _distance_decay(gh, gw, dev))
    m = F.conv1d(m.reshape(b * n, 1, n), kernel, padding=size // 2).reshape(b, n, n).relu()
    return m / (m.sum(dim=-1, keepdim=True) + 1e-8)


@STRATEGIES.register("resclip")
class ResCLIPAttention(AttentionStrategy):
    """ResCLIP (Yang et al., CVPR 2025) over a base strategy: residual cross-correlation
    attention (RCS) and semantic feedback refinement (SFR); see the module docstring.

    Args:
        base: the strategy ResCLIP plugs into, a name (``"naclip"``, the paper's main results;
            ``"sclip"``, ``"clearclip"``, ``"vanilla"``) or an object exposing
            :meth:`~AttentionStrategy.attention_terms`.
        base_kwargs: constructor arguments of a named base (e.g. ``{"std": 5.0}``).
        rcs: apply RCS.
        rcs_layers: 0-based blocks whose query-key attention is averaged (paper: 5..8 of
            ViT-B/16's 12, also in its code for other towers); each at least 1 and before the
            last block.
        rcs_weights: ``(τ_r, λ_r)``.
        sfr: apply SFR (needs the vocabulary: ``ctx.extras[TEXT_EMBEDS]`` or ``text_embeds``).
        sfr_weights: ``(τ_f, λ_f)``.
        temp_thd: SFR's probability threshold below which a pixel gets name 0.
        logit_scale: SFR's ``softmax(logit_scale · cos)`` (the segmentor's, 40 in the paper).
        sfr_std: the Gaussian blur of SFR's rows (the code uses NACLIP's std, 5).
        delete_same_entity: SFR's path-based decay.
        pamr_iters, pamr_dilations: PAMR on SFR's first-pass map (0 iterations: none).
        sfr_half: round ``M`` to float16 as the official code does (it runs in fp16).
        text_embeds: fixed name embeddings ``[Q, D]`` used when the context has none.
        keep_residual: ``None``: the base's.
    """

    def __init__(
        self,
        base: str | AttentionStrategy = "naclip",
        base_kwargs: dict[str, Any] | None = None,
        rcs: bool = True,
        rcs_layers: Sequence[int] = (5, 6, 7, 8),
        rcs_weights: Sequence[float] = (2.0, 0.4),
        sfr: bool = True,
        sfr_weights: Sequence[float] = (1.8, 0.7),
        temp_thd: float = 0.25,
        logit_scale: float = 40.0,
        sfr_std: float = 5.0,
        delete_same_entity: bool = True,
        pamr_iters: int = 10,
        pamr_dilations: Sequence[int] = (8, 16),
        sfr_half: bool = False,
        text_embeds: Tensor | None = None,
        keep_residual: bool | None = None,
    ) -> None:
        base_strategy = build_strategy(base, **(base_kwargs or {}))
        if isinstance(base_strategy, ResCLIPAttention):
            raise ValueError("ResCLIP's base must be another strategy, not ResCLIP.")
        super().__init__(base_strategy.keep_residual if keep_residual is None else keep_residual)
        if type(base_strategy).attention_terms is AttentionStrategy.attention_terms:
            raise ValueError(
                f"ResCLIP needs a base whose attention is a sum of softmax terms (naclip, sclip, "
                f"clearclip, vanilla); {base_strategy.name!r} is not."
            )
        layers = tuple(int(i) for i in rcs_layers)
        if rcs and (not layers or min(layers) < 1):
            raise ValueError(f"rcs_layers must be block indices >= 1, got {layers}.")
        if len(rcs_weights) != 2 or len(sfr_weights) != 2:
            raise ValueError("rcs_weights and sfr_weights are pairs (tau, lambda).")
        if sfr_std <= 0:
            raise ValueError(f"sfr_std must be > 0, got {sfr_std}.")
        self.base = base_strategy
        self.rcs = bool(rcs)
        self.rcs_layers = layers
        self.rcs_weights = (float(rcs_weights[0]), float(rcs_weights[1]))
        self.sfr = bool(sfr)
        self.sfr_weights = (float(sfr_weights[0]), float(sfr_weights[1]))
        self.temp_thd = float(temp_thd)
        self.logit_scale = float(logit_scale)
        self.sfr_std = float(sfr_std)
        self.delete_same_entity = bool(delete_same_entity)
        self.pamr = PAMR(int(pamr_iters), tuple(pamr_dilations)) if pamr_iters > 0 else None
        self.sfr_half = bool(sfr_half)
        self.text_embeds = text_embeds

    @property
    def needs_text(self) -> bool:  # type: ignore[override]
        """SFR needs the vocabulary unless fixed ``text_embeds`` were given."""
        return self.sfr and self.text_embeds is None

    def trunk_taps(self, num_blocks: int) -> tuple[int, ...]:
        if not self.rcs:
            return ()
        if max(self.rcs_layers) > num_blocks - 2:
            raise ValueError(
                f"rcs_layers {self.rcs_layers} need blocks before the last one; this tower has "
                f"{num_blocks} blocks (use indices 1..{num_blocks - 2})."
            )
        return tuple(sorted({i - 1 for i in self.rcs_layers}))

    # -- the pieces --------------------------------------------------------------------------
    def rcs_attention(self, ctx: TokenContext) -> Tensor:
        """``R`` ``[B, heads, L, L]``: mean of ``softmax(q_l k_lᵀ s)`` over ``rcs_layers``."""
        if ctx.block_view is None:
            raise RuntimeError("ResCLIP's RCS needs the backbone's trunk (ctx.block_view).")
        total: Tensor | None = None
        for layer in self.rcs_layers:
            blk = ctx.block_view(layer)
            q, k, _ = split_qkv(blk, blk.ln_1(ctx.block_outputs[layer - 1]))
            a = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
            total = a if total is None else total + a
        assert total is not None
        return total / len(self.rcs_layers)

    def mix(
        self, terms: list[tuple[Tensor, Tensor | None]], rcs: Tensor | None, fb: Tensor | None
    ) -> Tensor:
        """The attention weights from the base's terms, ``R`` and the feedback ``M``
        (``[B, L, L]``, normalised) or ``None``."""
        weights: Tensor | None = None
        for logits, bias in terms:
            if fb is not None:
                tau, lam = self.sfr_weights
                logits = tau * ((1 - lam) * logits + lam * fb.unsqueeze(1).to(logits.dtype))
            if bias is not None:
                logits = logits + bias
            a = torch.softmax(logits, dim=-1)
            weights = a if weights is None else weights + a
        assert weights is not None
        if rcs is not None:
            tau, lam = self.rcs_weights
            weights = tau * ((1 - lam) * weights + lam * rcs.to(weights.dtype))
        return weights

    def feedback(self, tokens: Tensor, ctx: TokenContext) -> Tensor:
        """SFR's ``M`` ``[B, L, L]`` (CLS row and column 0, divided by its maximum) from the
        first pass's output ``tokens`` ``[B, L, C]``."""
        text = ctx.extras.get(TEXT_EMBEDS, self.text_embeds)
        if text is None:
            raise RuntimeError(
                "ResCLIP's semantic feedback needs the vocabulary's name embeddings: run it "
                "through a segmentor (it passes them), give ResCLIPAttention(text_embeds=...), "
                "or set sfr=False."
            )
        if ctx.project is None or ctx.images is None:
            raise RuntimeError("ResCLIP's semantic feedback needs ctx.project and ctx.images.")
        b, length, _ = tokens.shape
        gh, gw = ctx.grid
        feats = F.normalize(ctx.project(tokens[:, 1:]).float(), dim=-1)
        logits = feats @ text.to(feats).T  # [B, N, Q]
        logits = logits.transpose(1, 2).reshape(b, -1, gh, gw)
        images = ctx.images.float()
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        if self.pamr is not None:
            logits = self.pamr(images, logits)
        probs = torch.softmax(logits * self.logit_scale, dim=1)
        p = int(ctx.extras.get("patch_size", images.shape[-2] // gh))
        labels = patch_labels(probs, p, (gh, gw), self.temp_thd)
        m = feedback_affinity(labels, self.sfr_std, self.delete_same_entity)
        full = m.new_zeros(b, length, length)
        full[:, 1:, 1:] = m
        full = full / full.flatten(1).amax(dim=1).view(b, 1, 1)
        if self.sfr_half:
            full = full.half().float()
        return full

    # -- the block ---------------------------------------------------------------------------
    def attend(self, q: Tensor, k: Tensor, v: Tensor, ctx: TokenContext) -> Tensor:
        """RCS only (no feedback): ``mix(terms, R) v``."""
        rcs = self.rcs_attention(ctx) if self.rcs else None
        return self.mix(self.base.attention_terms(q, k, ctx), rcs, None).to(v.dtype) @ v

    def forward(self, block: AttentionBlock, x: Tensor, ctx: TokenContext) -> Tensor:
        q, k, v = split_qkv(block, block.ln_1(x))
        terms = self.base.attention_terms(q, k, ctx)
        rcs = self.rcs_attention(ctx) if self.rcs else None
        weights = self.mix(terms, rcs, None)
        if self.sfr:
            first = self.finish_block(block, x, weights.to(v.dtype) @ v)
            weights = self.mix(terms, rcs, self.feedback(first, ctx))
        return self.finish_block(block, x, weights.to(v.dtype) @ v)

    def extra_repr(self) -> str:
        return (
            f"base={self.base.name!r}, rcs={self.rcs}, rcs_layers={self.rcs_layers}, "
            f"rcs_weights={self.rcs_weights}, sfr={self.sfr}, sfr_weights={self.sfr_weights}, "
            f"temp_thd={self.temp_thd}, keep_residual={self.keep_residual}"
        )
