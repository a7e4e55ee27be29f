"""``scclip``: SC-CLIP, self-calibrated CLIP (Bai et al., 2024, arXiv 2411.15869).

With ``X_l`` the output tokens of block ``l`` (0-based; ``X_{L-2}`` enters the last block),
patches ``P_l`` and CLS ``c_l``, for each image:

1. **Anomaly tokens**: local outlier factors of the patches of ``X_{L-2}`` (``k`` nearest
   neighbours in squared Euclidean distance, the code's simplified reachability: each token's
   own k-distance) mark the top ``contamination`` fraction (``LOF > quantile(1 − c)``) as
   anomalies; each anomaly is replaced by the mean of its non-anomalous 3 x 3 neighbours
   (:func:`resolve_anomalies`), in ``P_{L-2}`` and in the mid-layer features ``P_pre``.
2. **Mid-layer consistency**: ``Σ = cos(P_pre, P_pre)`` (resolved ``P_pre``); the patches are
   first aggregated by ``Σ`` thresholded at ``β`` (:func:`aggregate`), then go through the last
   block's attention (patches only, reduced block)
   ``A = (softmax(γ (Σ − mean Σ)) restricted to entries ≥ 0 + softmax(k kᵀ s)) / 2``, and get
   ``res_cls · c_{L-2}`` added; the result is aggregated by ``cos(P_post, P_post)`` thresholded
   at ``β`` (``P_post`` not resolved).
3. **Multi-level fusion**: ``Y = Σ_{l = start}^{end − 1} X_l`` goes through the same attention
   (its patches) plus ``res_cls`` times its CLS, the same post aggregation, and is added.

The patch tokens are the result. SC-CLIP outputs no CLS token; ovdense's CLS slot holds CLIP's
own last block applied to the CLS token of ``X_{L-2}`` (so ``global_embed`` stays CLIP's
image embedding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import (
    STRATEGIES,
    AttentionBlock,
    AttentionStrategy,
    TokenContext,
    merge_heads,
    split_qkv,
)

__all__ = ["SCCLIPAttention", "aggregate", "lof_outliers", "resolve_anomalies"]


def lof_outliers(x: Tensor, n_neighbors: int = 30, contamination: float = 0.05) -> Tensor:
    """SC-CLIP's anomaly tokens of one image's patches ``x`` ``[N, C]``: ``[N]`` bool.

    ``d = ‖x_i − x_j‖²``; ``kNN(i)`` the ``k`` nearest other tokens (``k = min(n_neighbors,
    N − 1)``), ``kd(i)`` the distance to the k-th; ``lrd(i) = k / kd(i)`` (the official code's
    reachability, ``max(d(i, j), kd(i))`` averaged over ``kNN(i)``, is ``kd(i)``);
    ``LOF(i) = mean_{j ∈ kNN(i)} lrd(j) / lrd(i)``; anomalies: ``LOF > quantile(LOF, 1 − c)``.
    """
    n = x.shape[0]
    k = min(int(n_neighbors), n - 1)
    if k < 1:
        return torch.zeros(n, dtype=torch.bool, device=x.device)
    x = x.float()
    d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    knn_d, knn_i = torch.topk(d, k=k + 1, largest=False)
    knn_d, knn_i = knn_d[:, 1:], knn_i[:, 1:]
    reach = torch.maximum(knn_d, knn_d[:, -1:].expand_as(knn_d))
    lrd = k / torch.nan_to_num(reach.mean(dim=1), nan=1e-6)
    lof = (lrd[knn_i] / lrd.unsqueeze(1)).mean(dim=1)
    return lof > torch.quantile(lof, 1 - contamination)


def resolve_anomalies(fmap: Tensor, anomalies: Tensor) -> Tensor:
    """Replace each anomaly of ``fmap`` ``[B, C, H, W]`` (``anomalies`` ``[B, H, W]`` bool) by the
    mean of its non-anomalous 3 x 3 neighbours (zero padding); anomalies without one stay."""
    b, c, h, w = fmap.shape
    keep = (~anomalies).to(fmap.dtype).unsqueeze(1)  # [B, 1, H, W]
    ring = torch.ones(1, 1, 3, 3, dtype=fmap.dtype, device=fmap.device)
    ring[..., 1, 1] = 0
    sums = F.conv2d((fmap * keep).reshape(b * c, 1, h, w), ring, padding=1).reshape(b, c, h, w)
    counts = F.conv2d(keep, ring, padding=1)
    update = anomalies.unsqueeze(1) & (counts > 0)
    return torch.where(update, sums / counts.clamp_min(1), fmap)


def aggregate(tokens: Tensor, corr: Tensor) -> Tensor:
    """``tokens`` ``[B, N, C]`` averaged by the rows of ``corr`` ``[B, N, N]`` (each row divided
    by its sum ``+ 1e-6``)."""
    return (corr / (corr.sum(dim=-1, keepdim=True) + 1e-6)) @ tokens


@STRATEGIES.register("scclip")
class SCCLIPAttention(AttentionStrategy):
    """SC-CLIP (Bai et al., 2024): anomaly-token resolution, mid-layer feature consistency in the
    last block's attention, multi-level fusion; see the module docstring. The defaults are the
    official ViT-B/16 settings.

    Args:
        pre_adjust_idx: block whose (resolved) patch similarity ``Σ`` aggregates the input and
            re-calibrates the attention (paper: 8).
        post_adjust_idx: block whose patch similarity aggregates the output (paper: 3).
        multi_start_idx, multi_end_idx: the blocks ``start .. end − 1`` summed for the fusion
            (paper: 3 .. 9).
        res_cls: weight of the CLS token added to the patches (paper: 0.3).
        beta: similarity threshold of the aggregations (paper: 0.4).
        gamma: temperature of the similarity attention (paper: 3).
        lof_neighbors, lof_contamination: the anomaly detector (paper: 30, 0.05).
    """

    default_keep_residual = False

    def __init__(
        self,
        pre_adjust_idx: int = 8,
        post_adjust_idx: int = 3,
        multi_start_idx: int = 3,
        multi_end_idx: int = 10,
        res_cls: float = 0.3,
        beta: float = 0.4,
        gamma: float = 3.0,
        lof_neighbors: int = 30,
        lof_contamination: float = 0.05,
    ) -> None:
        super().__init__(keep_residual=False)
        if not 0 <= multi_start_idx < multi_end_idx:
            raise ValueError(
                "Need 0 <= multi_start_idx < multi_end_idx, got "
                f"{multi_start_idx}, {multi_end_idx}."
            )
        if not 0 < lof_contamination < 1:
            raise ValueError(f"lof_contamination must be in (0, 1), got {lof_contamination}.")
        self.pre_adjust_idx = int(pre_adjust_idx)
        self.post_adjust_idx = int(post_adjust_idx)
        self.multi_start_idx = int(multi_start_idx)
        self.multi_end_idx = int(multi_end_idx)
        self.res_cls = float(res_cls)
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.lof_neighbors = int(lof_neighbors)
        self.lof_contamination = float(lof_contamination)

    def trunk_taps(self, num_blocks: int) -> tuple[int, ...]:
        taps = {self.pre_adjust_idx, self.post_adjust_idx}
        taps |= set(range(self.multi_start_idx, self.multi_end_idx))
        if max(taps) > num_blocks - 2 or min(taps) < 0:
            raise ValueError(
                f"SC-CLIP's levels {sorted(taps)} must be earlier blocks of this tower "
                f"(0..{num_blocks - 2}); set pre/post_adjust_idx and multi_start/end_idx for it."
            )
        return tuple(sorted(taps))

    def similarity_attention(self, block: AttentionBlock, patches: Tensor, sim: Tensor) -> Tensor:
        """``out_proj(A v)`` of the last block on ``patches`` ``[B, N, C]`` (no CLS), with
        ``A = (softmax(γ (Σ − mean Σ)), entries < 0 dropped, + softmax(k kᵀ s)) / 2``."""
        # a placeholder prefix token keeps the token layout towers expect (EVA's rotary
        # embedding skips the prefix); projections are per token, so it changes nothing else
        pad = patches.new_zeros(patches.shape[0], 1, patches.shape[-1])
        _, k, v = split_qkv(block, block.ln_1(torch.cat([pad, patches], dim=1)))
        k, v = k[:, :, 1:], v[:, :, 1:]
        logits = (sim - sim.mean(dim=(1, 2), keepdim=True)) * self.gamma
        logits = logits.masked_fill(logits < 0, float("-inf"))
        kk = torch.softmax(k @ k.transpose(-1, -2) * k.shape[-1] ** -0.5, dim=-1)
        weights = (torch.softmax(logits, dim=-1).unsqueeze(1).to(kk.dtype) + kk) / 2
        return merge_heads(block, weights @ v)

    def _cls_token(self, block: AttentionBlock, x: Tensor) -> Tensor:
        """CLIP's own last block on the CLS token of ``x`` (its attention over all tokens)."""
        q, k, v = split_qkv(block, block.ln_1(x))
        o = F.scaled_dot_product_attention(q[:, :, :1], k, v)
        y = x[:, :1] + block.ls_1(merge_heads(block, o))
        return y + block.ls_2(block.mlp(block.ln_2(y)))

    def forward(self, block: AttentionBlock, x: Tensor, ctx: TokenContext) -> Tensor:
        b, length, c = x.shape
        gh, gw = ctx.grid
        outs = ctx.block_outputs

        def to_map(t: Tensor) -> Tensor:
            return t.transpose(1, 2).reshape(b, c, gh, gw)

        def from_map(m: Tensor) -> Tensor:
            return m.reshape(b, c, gh * gw).transpose(1, 2)

        def cos_sim(t: Tensor) -> Tensor:
            t = F.normalize(t, dim=-1)
            return t @ t.transpose(1, 2)

        anomalies = torch.stack(
            [lof_outliers(x[i, 1:], self.lof_neighbors, self.lof_contamination) for i in range(b)]
        ).reshape(b, gh, gw)
        patches = from_map(resolve_anomalies(to_map(x[:, 1:]), anomalies))
        sim = cos_sim(
            from_map(resolve_anomalies(to_map(outs[self.pre_adjust_idx][:, 1:]), anomalies))
        )
        post = cos_sim(outs[self.post_adjust_idx][:, 1:])
        post = post.masked_fill(post < self.beta, 0.0)

        out = aggregate(patches, sim.masked_fill(sim < self.beta, 0.0))
        out = self.similarity_attention(block, out, sim) + self.res_cls * x[:, :1]
        out = aggregate(out, post)

        fused = sum(outs[i] for i in range(self.multi_start_idx, self.multi_end_idx))
        assert isinstance(fused, Tensor)
        extra = self.similarity_attention(block, fused[:, 1:], sim) + self.res_cls * fused[:, :1]
        out = out + aggregate(extra, post)
        return torch.cat([self._cls_token(block, x), out], dim=1)

    def extra_repr(self) -> str:
        return (
            f"pre_adjust_idx={self.pre_adjust_idx}, post_adjust_idx={self.post_adjust_idx}, "
            f"multi=({self.multi_start_idx}, {self.multi_end_idx}), res_cls={self.res_cls}, "
            f"beta={self.beta}"
        )
