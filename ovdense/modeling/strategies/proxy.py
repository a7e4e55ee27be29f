"""``proxy``: ProxyCLIP (Lan et al., ECCV 2024): CLIP's last block attends with a vision
foundation model's affinities ("proxy attention").

For one image, with ``F`` the VFM patch features (``[C, N']`` on the VFM grid, each column
L2-normalised) and ``v`` the CLIP values of the patch tokens (per head, from the last block's
``W_qkv · ln_1(x)``):

1. ``S = Fᵀ F`` (cosine similarity of every pair of VFM patches, ``[N', N']``);
2. ``S ← (S − β · mean(S)) · γ``; entries ``< 0`` become ``−inf``; ``A = softmax(S)`` (last axis);
3. ``v`` is reshaped to the CLIP grid and resized (bilinear) to the VFM grid;
4. output ``= out_proj(A v)`` per head: the reduced block (no residual, no FFN).

The tokens come out on the VFM grid (``ctx.grid`` is updated), e.g. 42 x 42 for a 336 crop with
DINO ViT-B/8, so the dense map is finer than CLIP's 21 x 21.
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
    STRATEGIES,
    AttentionBlock,
    AttentionStrategy,
    TokenContext,
    _attn_params,
    merge_heads,
)

__all__ = ["ProxyAttention", "proxy_affinity"]

MEAN_OVER = ("image", "row", "batch")


def proxy_affinity(
    feats: Tensor, beta: float = 1.2, gamma: float = 3.0, mean_over: str = "image"
) -> Tensor:
    """ProxyCLIP's attention weights from VFM features.

    Args:
        feats: ``[B, C, h, w]`` VFM patch features (normalised here over ``C``).
        beta, gamma: ``S ← (S − β · mean(S)) · γ``.
        mean_over: ``"image"``: ``mean(S)`` is the mean of each image's whole ``[N, N]`` matrix
            (ProxyCLIP's ``torch.mean(similarity)``, which it calls with one image at a time);
            ``"row"``: the mean of each row; ``"batch"``: one mean over the whole ``[B, N, N]``
            batch (Trident's same ``torch.mean(similarity)``, called on all the windows of one
            image at once: the segmentor's splice mode passes an image's windows together).

    Returns:
        ``[B, N, N]`` (``N = h * w``, row-major patches), each row summing to 1. Entries of the
        shifted ``S`` below 0 get weight 0. A row with no entry ``>= 0`` (ProxyCLIP would give
        NaN there: it happens when an image is nearly uniform, ``mean(S) > 1 / β``) keeps its
        unmasked softmax instead.
    """
    if mean_over not in MEAN_OVER:
        raise ValueError(f"mean_over must be one of {MEAN_OVER}, got {mean_over!r}.")
    if feats.dtype in (torch.float16, torch.bfloat16):
        feats = feats.float()
    f = F.normalize(feats.flatten(2), dim=1)  # [B, C, N]
    s = f.transpose(1, 2) @ f  # [B, N, N]
    if mean_over == "image":
        mean = s.mean(dim=(1, 2), keepdim=True)
    elif mean_over == "batch":
        mean = s.mean()
    else:
        mean = s.mean(-1, keepdim=True)
    s = (s - beta * mean) * gamma
    keep = s >= 0
    keep |= ~keep.any(dim=-1, keepdim=True)
    return torch.softmax(s.masked_fill(~keep, float("-inf")), dim=-1)


@STRATEGIES.register("proxy")
class ProxyAttention(AttentionStrategy):
    """ProxyCLIP's proxy attention in CLIP's last block (reduced block, output on the VFM grid).

    Args:
        vfm: a :class:`~ovdense.modeling.vfm.VisionFoundationModel` or a name for
            :func:`~ovdense.modeling.vfm.build_vfm` (``"dino_vitb8"``, the paper's
            default; ``"dino_vitb16"``, ``"dinov2_vitb14_reg"``, ``"sam_vit_b"``, ...).
        beta, gamma: ``S ← (S − β · mean(S)) · γ`` (paper: 1.2 and 3.0).
        vfm_kwargs: arguments of ``build_vfm`` when ``vfm`` is a name (e.g.
            ``{"checkpoint": "/path/sam_vit_b_01ec64.pth"}``).
        mean_over: ``"image"`` (ProxyCLIP), ``"row"`` or ``"batch"`` (Trident, with all windows
            of an image in one batch); see :func:`proxy_affinity`.
        clip_mean, clip_std: the normalisation of the CLIP input, used to recover the ``[0, 1]``
            image the VFM needs from ``ctx.images``. ``ctx.extras["clip_mean"]`` /
            ``["clip_std"]`` take precedence when a caller passes them; default: OpenAI CLIP's
            (also that of open_clip's ViT-B-16 LAION weights). Set them for CLIPs normalised
            otherwise (e.g. SigLIP: 0.5 / 0.5).

    Notes:
        - The CLS output (placeholder; dense features never use it) is ``out_proj(v_cls)``: the
          CLS token attends only to itself, as in MaskCLIP. The image-level embedding of such a
          backbone is therefore MaskCLIP's, not CLIP's.
        - Crop sizes: the VFM sees exactly the crop CLIP sees (all its pixels), zero-padded at
          the bottom / right to its patch size (SAM: resized to 1024 on the long side). The VFM
          grid is ``ceil(H / p_vfm)``, CLIP's ``floor(H / p_clip)``; both maps are taken to span
          the crop, so at sizes that are not multiples the two are misaligned by less than one
          patch. ProxyCLIP instead zero-pads every crop to a multiple of 56 for both models;
          with its 336 windows (a multiple of 8, 14, 16 and 56) the two choices coincide.
        - Memory: ``A`` is ``[B, N', N']`` (SAM at a 336 crop: 4096² per window).
    """

    default_keep_residual = False

    def __init__(
        self,
        vfm: VisionFoundationModel | str = "dino_vitb8",
        beta: float = 1.2,
        gamma: float = 3.0,
        vfm_kwargs: dict[str, Any] | None = None,
        mean_over: str = "image",
        clip_mean: tuple[float, float, float] | None = None,
        clip_std: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__(keep_residual=False)
        if isinstance(vfm, str):
            vfm = build_vfm(vfm, **(vfm_kwargs or {}))
        elif vfm_kwargs:
            raise ValueError("vfm_kwargs are only used with a VFM name; got a VFM object.")
        if not isinstance(vfm, VisionFoundationModel):
            raise TypeError(
                f"vfm must be a VisionFoundationModel or a name, got {type(vfm).__name__}; wrap "
                "modules with DINOFeatures(model=...) / SAMFeatures(image_encoder=...)."
            )
        if mean_over not in MEAN_OVER:
            raise ValueError(f"mean_over must be one of {MEAN_OVER}, got {mean_over!r}.")
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}.")
        self.vfm = vfm
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.mean_over = mean_over
        self.clip_mean = tuple(clip_mean or OPENAI_DATASET_MEAN)
        self.clip_std = tuple(clip_std or OPENAI_DATASET_STD)

    def output_grid(self, grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, int]:
        """The VFM's grid for images of ``image_size`` ``(H, W)`` (``vfm.output_grid``)."""
        return tuple(self.vfm.output_grid(*image_size))  # type: ignore[return-value]

    def images01(self, ctx: TokenContext) -> Tensor:
        """The ``[0, 1]`` images ``[B, 3, H, W]`` behind ``ctx.images`` (CLIP-normalised)."""
        return ctx.images01(self.clip_mean, self.clip_std, "ProxyAttention")

    def affinity(self, ctx: TokenContext) -> tuple[Tensor, tuple[int, int]]:
        """Attention weights ``[B, N', N']`` (at least float32) from the VFM, and its grid."""
        feats = self.vfm(self.images01(ctx))
        grid = (int(feats.shape[-2]), int(feats.shape[-1]))
        return proxy_affinity(feats, self.beta, self.gamma, self.mean_over), grid

    def forward(self, block: AttentionBlock, x: Tensor, ctx: TokenContext) -> Tensor:
        """Args:
            block: CLIP's last residual attention block.
            x: ``[B, 1 + gh * gw, C]`` tokens entering it, ``(gh, gw) = ctx.grid``.
            ctx: with ``images`` (CLIP-normalised ``[B, 3, H, W]``).

        Returns:
            ``[B, 1 + h * w, C]`` on the VFM grid ``(h, w)``, which is written to ``ctx.grid``.
        """
        weight, bias, _, heads = _attn_params(block)
        b, length, c = x.shape
        gh, gw = ctx.grid
        if length != 1 + gh * gw:
            raise ValueError(f"Expected 1 + {gh}x{gw} tokens, got {length}.")
        hd = c // heads
        # only the values are needed: the last third of the fused projection
        v = F.linear(block.ln_1(x), weight[2 * c :], None if bias is None else bias[2 * c :])
        v = v.reshape(b, length, heads, hd).transpose(1, 2)  # [B, heads, L, hd]
        attn, grid = self.affinity(ctx)
        v_patch = v[:, :, 1:].transpose(-1, -2).reshape(b, heads * hd, gh, gw)
        if grid != (gh, gw):
            v_patch = F.interpolate(v_patch, size=grid, mode="bilinear", align_corners=False)
        v_patch = v_patch.reshape(b, heads, hd, -1).transpose(-1, -2)  # [B, heads, N', hd]
        out = attn.to(v.dtype).unsqueeze(1) @ v_patch
        ctx.grid = grid
        return merge_heads(block, torch.cat([v[:, :, :1], out], dim=2))

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, mean_over={self.mean_over!r}"
