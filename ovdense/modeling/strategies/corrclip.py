"""``corrclip``: CorrCLIP (Zhang et al., ICCV 2025): CLIP's patch correlations reconstructed
with class-agnostic masks (their *scope*) and a vision foundation model (their *values*),
two more branches, and (outside the block) a mask-based correction of the final map.

For one crop, with ``F`` the VFM's patch features (DINO ViT-B/8: query + key of its last block,
L2-normalised, ``[N', C']`` on the VFM grid ``(h, w)``) and ``R`` the crop's region map (one
label per class-agnostic mask, ``0`` where none: ``ctx.extras[REGIONS]``, resized to the VFM
grid with nearest-neighbour):

1. **Mask merging** (:func:`merge_regions`): with at least three labels present, the regions
   other than the *first* (the smallest label present: the unsegmented pixels) get the mean of
   their ``F`` (normalised); regions whose cosine distance ``max(S_r) − S_r`` is ``<= eps``
   (0.2) are linked, and each connected group becomes one region (the official DBSCAN with
   ``min_samples=1``, whose clusters are exactly these groups).
2. **Scope and value** (:func:`scope_attention`): ``S = F Fᵀ``; patch ``i`` may attend to ``j``
   when both lie in the same (merged) region other than the first, or when either lies in the
   first region and ``S_ij > mean(S)``; ``A = softmax(τ S)`` over the allowed entries (τ = 4).
3. **Main and spatial branches**: ``out_proj(A v)`` with ``v`` the last block's values of its
   input tokens (main) and of the mean of the outputs of blocks ``L−2−n .. L−3`` (spatial,
   ``n = 5`` for 12 blocks), each resized (bilinear) from the CLIP grid to the VFM grid. The
   reduced block: no residual, no FFN.
4. **Semantic branch**: one token per region of the merged map at the CLIP grid (nearest
   resize), starting as the CLS token entering block 0, runs through *every* block as a query
   that sees only the CLS token and its region's patch tokens (the official code's masked
   "mask class tokens"; the image tokens themselves never see them, so their path is CLIP's
   own). Each VFM-grid patch takes its region's token (nearest resize of the regions).
5. **Fusion**: ``proj(ln(main) + α ln(spatial) + β ln(semantic))`` (α = 1, β = 0.5), which the
   backbone computes as ``project(main) + α project(spatial) + β project(semantic)``: the
   branches travel in ``ctx.fused_branches``.

The tokens come out on the VFM grid. The CLS slot holds CLIP's own last block on the CLS token
(CorrCLIP outputs none), so ``global_embed`` stays CLIP's image embedding. Without region maps
(no ``mask_source``), every patch is in the first region: the scope is ``S > mean(S)`` and one
semantic token covers the crop. The map correction of the final labels is
:class:`~ovdense.modeling.refiners.RegionVote`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import Tensor

from ..vfm.base import VisionFoundationModel
from ..vfm.registry import build_vfm
from .base import (
    REGIONS,
    STRATEGIES,
    AttentionBlock,
    AttentionStrategy,
    TokenContext,
    _attn_params,
    merge_heads,
    split_qkv,
)

__all__ = [
    "CorrCLIPAttention",
    "dbscan_groups",
    "merge_regions",
    "scope_attention",
    "spatial_layer_count",
]


def spatial_layer_count(num_blocks: int) -> int:
    """How many blocks the spatial branch averages (the official rule by tower depth: 12 -> 5,
    24 -> 12, 32 -> 28, else ``num_blocks − 4``)."""
    return {12: 5, 24: 12, 32: 28}.get(int(num_blocks), int(num_blocks) - 4)


def dbscan_groups(dist: Tensor, eps: float) -> Tensor:
    """DBSCAN with ``min_samples=1`` on a precomputed distance matrix ``[M, M]`` (scikit-learn's
    algorithm): ``[M]`` int64 cluster ids, ``-1`` for noise. A point is a core point when its
    neighbourhood ``dist[i] <= eps`` is not empty (itself included when ``dist[i, i] <= eps``);
    a cluster is everything reachable from a core point through core points' neighbourhoods;
    ids are given in the order of each cluster's first point."""
    m = dist.shape[0]
    near = (dist <= eps).cpu()
    core = near.any(dim=1).tolist()
    labels = [-1] * m
    current = 0
    for seed in range(m):
        if labels[seed] != -1 or not core[seed]:
            continue
        stack = [seed]
        while stack:
            i = stack.pop()
            if labels[i] != -1:
                continue
            labels[i] = current
            if core[i]:
                stack.extend(
                    j for j in torch.nonzero(near[i]).flatten().tolist() if labels[j] == -1
                )
        current += 1
    return torch.tensor(labels, dtype=torch.int64, device=dist.device)


def merge_regions(regions: Tensor, feats: Tensor, eps: float = 0.2) -> Tensor:
    """CorrCLIP's mask merging (step 1 of the module docstring).

    Args:
        regions: ``[N]`` int region labels of the patches (row-major VFM grid).
        feats: ``[N, C]`` L2-normalised VFM features of the same patches.
        eps: the DBSCAN radius on the cosine distance ``max(S_r) − S_r``.

    Returns:
        ``[N]`` labels: the first region (smallest label) unchanged, each other region relabelled
        ``base + group`` (``base`` above every input label) by its group (a region DBSCAN calls
        noise keeps its label); unchanged when fewer than three labels are present.
    """
    values = torch.unique(regions)
    if values.numel() <= 2:
        return regions
    means = torch.stack([feats[regions == v].mean(dim=0) for v in values])
    means = F.normalize(means, dim=1)[1:]
    sim = means @ means.T
    groups = dbscan_groups(sim.max() - sim, eps)
    out = regions.clone()
    base = int(values.max()) + 1
    for v, g in zip(values[1:].tolist(), groups.tolist(), strict=True):
        if g != -1:
            out[regions == v] = base + g
    return out


def scope_attention(sim: Tensor, regions: Tensor, tau: float = 4.0) -> Tensor:
    """CorrCLIP's attention weights (step 2 of the module docstring).

    Args:
        sim: ``[N, N]`` cosine similarity of the VFM features.
        regions: ``[N]`` (merged) region labels; the smallest is the unsegmented region.
        tau: temperature (``softmax(τ S)``).

    Returns:
        ``[N, N]`` rows summing to 1. A row with no allowed entry (all ``S`` equal, e.g. a
        uniform crop; the official code gives NaN there) attends to itself.
    """
    first = regions == regions.min()
    same = (regions[:, None] == regions[None, :]) & ~first[:, None]
    loose = (first[:, None] | first[None, :]) & (sim > sim.mean())
    allowed = same | loose
    empty = ~allowed.any(dim=1)
    if empty.any():
        allowed = allowed | torch.diag(empty)
    return torch.softmax((sim * tau).masked_fill(~allowed, float("-inf")), dim=-1)


@STRATEGIES.register("corrclip")
class CorrCLIPAttention(AttentionStrategy):
    """CorrCLIP's last block: mask-restricted, VFM-valued attention with spatial and semantic
    branches (see the module docstring). Defaults: the official code's.

    Args:
        vfm: a :class:`~ovdense.modeling.vfm.VisionFoundationModel` or a name for
            :func:`~ovdense.modeling.vfm.build_vfm` (``"dino_vitb8"``, the paper's); its
            features must be the official ones (DINO: ``feature="query_key"``, set by default
            for a name).
        vfm_kwargs: arguments of ``build_vfm`` for a name (``checkpoint=...``).
        tau: temperature of the attention (4).
        alpha, beta: weights of the spatial and semantic branches (1.0, 0.5).
        spatial_layers: how many blocks before the last but one the spatial branch averages
            (``None``: :func:`spatial_layer_count` of the tower).
        merge_eps: the mask-merging radius (0.2).
        clip_mean, clip_std: the CLIP input's normalisation (``ctx.extras`` take precedence;
            default OpenAI's), to recover the ``[0, 1]`` image the VFM sees.
    """

    default_keep_residual = False
    needs_regions = True
    not_exportable = (
        "its mask merging and mask-scoped attention branch on the number of regions present "
        "in each image (data-dependent shapes)"
    )

    def __init__(
        self,
        vfm: VisionFoundationModel | str = "dino_vitb8",
        vfm_kwargs: dict[str, Any] | None = None,
        tau: float = 4.0,
        alpha: float = 1.0,
        beta: float = 0.5,
        spatial_layers: int | None = None,
        merge_eps: float = 0.2,
        clip_mean: tuple[float, float, float] | None = None,
        clip_std: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__(keep_residual=False)
        if isinstance(vfm, str):
            vfm = build_vfm(vfm, **{"feature": "query_key", **(vfm_kwargs or {})})
        elif vfm_kwargs:
            raise ValueError("vfm_kwargs are only used with a VFM name; got a VFM object.")
        if not isinstance(vfm, VisionFoundationModel):
            raise TypeError(f"vfm must be a VisionFoundationModel or a name, got {type(vfm)}.")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}.")
        if spatial_layers is not None and int(spatial_layers) < 1:
            raise ValueError(f"spatial_layers must be >= 1 (or None), got {spatial_layers}.")
        self.vfm = vfm
        self.tau = float(tau)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.spatial_layers = None if spatial_layers is None else int(spatial_layers)
        self.merge_eps = float(merge_eps)
        self.clip_mean = tuple(clip_mean or OPENAI_DATASET_MEAN)
        self.clip_std = tuple(clip_std or OPENAI_DATASET_STD)

    # -- layers ---------------------------------------------------------------------------
    def spatial_blocks(self, num_blocks: int) -> range:
        """The blocks the spatial branch averages: ``L−2−n .. L−3`` (0-based)."""
        n = self.spatial_layers or max(1, spatial_layer_count(num_blocks))
        return range(max(0, num_blocks - 2 - n), num_blocks - 2)

    def trunk_taps(self, num_blocks: int) -> tuple[int, ...]:
        # every block's input, for the semantic tokens (-1: the tokens entering block 0)
        return tuple(range(-1, num_blocks - 1))

    def output_grid(self, grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, int]:
        """The VFM's grid for images of ``image_size`` ``(H, W)``."""
        return tuple(self.vfm.output_grid(*image_size))  # type: ignore[return-value]

    # -- inputs ---------------------------------------------------------------------------
    def _regions(self, ctx: TokenContext, grid: tuple[int, int]) -> Tensor:
        """``[B, h * w]`` int64 region labels on the VFM grid (zeros without region maps)."""
        assert ctx.images is not None
        b, _, height, width = ctx.images.shape
        r = ctx.extras.get(REGIONS)
        device = ctx.images.device
        if r is None:
            return torch.zeros(b, grid[0] * grid[1], dtype=torch.int64, device=device)
        r = torch.as_tensor(r, device=device)
        if r.ndim != 3 or r.shape[0] != b or r.shape[1] > height or r.shape[2] > width:
            raise ValueError(
                f"extras[{REGIONS!r}] must be [B={b}, H, W] region maps of the crops "
                f"({height}x{width}), got {tuple(r.shape)}."
            )
        if tuple(r.shape[1:]) != (height, width):  # crops padded after cutting: own region
            pad = (0, width - r.shape[2], 0, height - r.shape[1])
            r = F.pad(r.long(), pad, value=int(r.max()) + 1)
        r = F.interpolate(r[:, None].float(), size=grid, mode="nearest")
        return r[:, 0].long().flatten(1)

    # -- the block ------------------------------------------------------------------------
    def _cls_token(self, block: AttentionBlock, x: Tensor) -> Tensor:
        """CLIP's own last block on the CLS token of ``x`` (attention over all tokens)."""
        q, k, v = split_qkv(block, block.ln_1(x))
        o = F.scaled_dot_product_attention(q[:, :, :1], k, v)
        y = x[:, :1] + block.ls_1(merge_heads(block, o))
        return y + block.ls_2(block.mlp(block.ln_2(y)))

    @staticmethod
    def region_token_step(
        block: AttentionBlock, tokens: Tensor, x: Tensor, members: Tensor
    ) -> Tensor:
        """One block on the semantic tokens ``[R, C]``: token ``r`` queries the CLS token and
        the patches of region ``r`` of ``x`` ``[1 + N, C]`` (``members`` ``[R, N]`` bool), then
        the residual and FFN."""
        weight, bias, _, heads = _attn_params(block)
        r, c = tokens.shape
        hd = c // heads
        # the semantic tokens are prefix tokens (copies of CLS): no position transform on q
        q = F.linear(block.ln_1(tokens), weight[:c], None if bias is None else bias[:c])
        q = q.reshape(r, heads, hd).transpose(0, 1)  # [heads, R, hd]
        _, k, v = split_qkv(block, block.ln_1(x[None]))  # [1, heads, 1 + N, hd]
        allowed = torch.cat([members.new_ones(r, 1), members], dim=1)  # [R, 1 + N]
        o = F.scaled_dot_product_attention(q[None], k, v, attn_mask=allowed[None, None])
        y = tokens + block.ls_1(merge_heads(block, o)[0])
        return y + block.ls_2(block.mlp(block.ln_2(y)))

    def forward(self, block: AttentionBlock, x: Tensor, ctx: TokenContext) -> Tensor:
        """Args:
            block: CLIP's last block.
            x: ``[B, 1 + gh * gw, C]`` tokens entering it, ``(gh, gw) = ctx.grid``.
            ctx: with ``images``, the earlier blocks' tokens (:meth:`trunk_taps`), ``block_view``
                and optionally ``extras[REGIONS]``.

        Returns:
            ``[B, 1 + h * w, C]`` main tokens on the VFM grid ``(h, w)`` (written to
            ``ctx.grid``); the spatial and semantic branches go to ``ctx.fused_branches``.
        """
        b, length, c = x.shape
        gh, gw = ctx.grid
        if length != 1 + gh * gw:
            raise ValueError(f"Expected 1 + {gh}x{gw} tokens, got {length}.")
        if ctx.block_view is None:
            raise RuntimeError("CorrCLIPAttention runs inside a dense backbone (ctx.block_view).")
        outs = ctx.block_outputs
        num_blocks = len(outs)  # the taps: -1 .. L-2
        feats = self.vfm(ctx.images01(self.clip_mean, self.clip_std, "CorrCLIPAttention"))
        grid = (int(feats.shape[-2]), int(feats.shape[-1]))
        f = F.normalize(feats.flatten(2).transpose(1, 2).float(), dim=-1)  # [B, N', C']
        regions = self._regions(ctx, grid)

        spatial = torch.stack([outs[i] for i in self.spatial_blocks(num_blocks)]).mean(0)
        weight, bias, _, _ = _attn_params(block)
        w_v = weight[2 * c :]
        b_v = None if bias is None else bias[2 * c :]

        def values(t: Tensor) -> Tensor:  # [B, N', C]: patch values resized to the VFM grid
            v = F.linear(block.ln_1(t), w_v, b_v)[:, 1:]
            v = v.transpose(1, 2).reshape(b, c, gh, gw)
            if grid != (gh, gw):
                v = F.interpolate(v, size=grid, mode="bilinear", align_corners=False)
            return v.flatten(2).transpose(1, 2)

        v_main, v_spatial = values(x), values(spatial)
        main, branch_spatial, branch_semantic = [], [], []
        for i in range(b):
            merged = merge_regions(regions[i], f[i], self.merge_eps)
            attn = scope_attention(f[i] @ f[i].T, merged, self.tau).to(v_main.dtype)
            main.append(attn @ v_main[i])
            branch_spatial.append(attn @ v_spatial[i])
            branch_semantic.append(self._semantic(block, ctx, x[i], merged, grid, i))

        def out_proj(o: Tensor) -> Tensor:
            heads = _attn_params(block)[3]
            return merge_heads(block, o.reshape(b, o.shape[1], heads, -1).transpose(1, 2))

        ctx.grid = grid
        ctx.fused_branches.append((self.alpha, out_proj(torch.stack(branch_spatial))))
        ctx.fused_branches.append((self.beta, torch.stack(branch_semantic)))
        return torch.cat([self._cls_token(block, x), out_proj(torch.stack(main))], dim=1)

    def _semantic(
        self,
        block: AttentionBlock,
        ctx: TokenContext,
        x_last: Tensor,
        merged: Tensor,
        grid: tuple[int, int],
        i: int,
    ) -> Tensor:
        """Image ``i``'s semantic branch: ``[h * w, C]`` (step 4 of the module docstring)."""
        assert ctx.block_view is not None
        outs = ctx.block_outputs
        gh, gw = ctx.grid
        coarse = F.interpolate(merged.reshape(1, 1, *grid).float(), size=(gh, gw), mode="nearest")
        coarse = coarse.flatten().long()
        labels = torch.unique(coarse)
        members = coarse[None, :] == labels[:, None]  # [R, N]
        tokens = outs[-1][i, :1].expand(labels.numel(), -1)
        for layer in range(len(outs) - 1):  # block `layer` sees the tokens entering it
            view = ctx.block_view(layer)
            tokens = self.region_token_step(view, tokens, outs[layer - 1][i], members)
        tokens = self.region_token_step(block, tokens, x_last, members)
        fine = F.interpolate(members.reshape(-1, 1, gh, gw).float(), size=grid, mode="nearest")
        return fine.flatten(1).T.to(tokens.dtype) @ tokens

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau}, alpha={self.alpha}, beta={self.beta}, "
            f"spatial_layers={self.spatial_layers}, merge_eps={self.merge_eps}"
        )
