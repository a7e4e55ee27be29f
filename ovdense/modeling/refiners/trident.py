"""Trident's global aggregation (Shi et al., ICCV 2025): spliced sub-window features mixed over
the whole image by the attention of SAM's image encoder.

A *splice aggregator* fills the ``aggregator`` slot of
:class:`~ovdense.modeling.segmentors.Segmentor` (its splice-then-segment mode): it receives the
last-block tokens of every window, spliced into one map per image (before CLIP's final norm and
projection), and returns them mixed over the image. :class:`SAMAffinityAggregator` is Trident's
(github.com/YuHengsss/Trident, ``guidance_attn`` and ``get_sam_sim`` in
``open_clip/transformer.py``, ``get_sam_feat`` in ``trident.py``):

1. SAM's image encoder runs on the image (long side resized to 1024, padded); its last block's
   attention probabilities ``A_h`` (global attention over the padded 64 x 64 grid) and values
   ``v_h`` are cropped to the cells covering the image (``n = gh * gw``).
2. Per head, ``S_h = cos(v_h[m], v_h[n])``. A threshold per query cell
   ``t[m] = cos_fac · mean_{h, n} S_h[m, n]``; without ``refine_neg_cos`` a negative ``t[m]``
   becomes ``0.6``; then ``t[m] ← min(t[m], 0.9)``.
3. ``W = Σ_h A_h ⊙ [S_h > t]``, each row divided by its sum (Trident averages over heads
   first; the normalisation cancels it). The diagonal always passes (``S_h[m, m] = 1 > 0.9``),
   so no row is empty.
4. The spliced map is resized (bilinear, ``align_corners=False``) to SAM's grid and mixed:
   ``out[m] = Σ_n W[m, n] x[n]``. The output is on SAM's grid.

With ``columns = 2`` (Trident's Cityscapes setting) the image is cut into two halves side by
side, each through SAM on its own, and the map likewise (split at ``w // 2`` tokens); the two
outputs are put side by side again.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..vfm.base import VisionFoundationModel
from ..vfm.sam import (
    SAM_CHECKPOINTS,
    SAM_ENCODERS,
    SAMFeatures,
    SAMLastAttention,
    load_sam_image_encoder,
)

__all__ = ["SAMAffinityAggregator", "trident_affinity"]

#: Trident's settings (configs/base_config.py; ``get_sam_sim``'s constants).
TRIDENT_AFFINITY_DEFAULTS: dict[str, Any] = {
    "cos_fac": 1.2,
    "refine_neg_cos": True,
    "neg_thresh": 0.6,
    "max_thresh": 0.9,
}


def trident_affinity(
    attention: SAMLastAttention | tuple[Tensor, Tensor],
    cos_fac: float = 1.2,
    refine_neg_cos: bool = True,
    neg_thresh: float = 0.6,
    max_thresh: float = 0.9,
    head_chunk: int = 4,
) -> Tensor:
    """Trident's aggregation weights from SAM's last attention (steps 2-3 of the module
    docstring).

    Args:
        attention: a :class:`~ovdense.modeling.vfm.sam.SAMLastAttention` (the weights are
            computed ``head_chunk`` heads at a time), or ``(attn [B, H, n, n], v [B, H, n, hd])``
            given directly.
        cos_fac: the threshold's factor of the mean value similarity.
        refine_neg_cos: keep a negative threshold (``True``, Trident's default) or replace it by
            ``neg_thresh`` (its ADE20K / Cityscapes setting).
        max_thresh: the threshold's cap.

    Returns:
        ``[B, n, n]`` float32, rows summing to one.
    """
    if isinstance(attention, SAMLastAttention):
        v = attention.values().float()
        heads = attention.num_heads

        def attn_of(sl: slice) -> Tensor:
            return attention.weights(sl).float()
    else:
        attn_all, v = attention
        v = v.float()
        heads = int(v.shape[1])
        if attn_all.shape[:2] != v.shape[:2] or attn_all.shape[-1] != v.shape[2]:
            raise ValueError(
                f"attn {tuple(attn_all.shape)} and v {tuple(v.shape)} do not match: expected "
                "[B, H, n, n] and [B, H, n, hd]."
            )

        def attn_of(sl: slice) -> Tensor:
            return attn_all[:, sl].float()

    vn = F.normalize(v, dim=-1)  # [B, H, n, hd]
    # mean over heads and keys of S_h[m, n] = vn_h[m] · mean_n vn_h[n]
    thresh = (vn @ vn.mean(dim=2, keepdim=True).transpose(-1, -2)).mean(dim=1) * cos_fac
    if not refine_neg_cos:
        thresh = torch.where(thresh < 0, torch.full_like(thresh, neg_thresh), thresh)
    thresh = thresh.clamp(max=max_thresh)  # [B, n, 1]
    total = None
    step = max(1, int(head_chunk))
    for s in range(0, heads, step):
        sl = slice(s, min(s + step, heads))
        sim = vn[:, sl] @ vn[:, sl].transpose(-1, -2)  # [B, h, n, n]
        part = torch.where(sim > thresh[:, None], attn_of(sl), 0.0).sum(dim=1)
        total = part if total is None else total + part
    assert total is not None
    return total / total.sum(dim=-1, keepdim=True)


class SAMAffinityAggregator(nn.Module):
    """Trident's aggregation of spliced features by SAM's attention: a splice aggregator for the
    segmentor's ``aggregator`` slot (see the module docstring).

    Args:
        sam: a SAM size (``"vit_b"``, Trident's default; ``"vit_l"``, ``"vit_h"``) or a built
            :class:`~ovdense.modeling.vfm.sam.SAMFeatures`.
        checkpoint: the official SAM checkpoint of that size (``sam_vit_b_01ec64.pth``).
        pretrained: ``False`` (no checkpoint) keeps random weights (tests).
        sam_kwargs: ``ImageEncoderViT`` arguments (tiny test encoders).
        cos_fac, refine_neg_cos: the threshold (:func:`trident_affinity`; Trident: 1.2 and
            ``True``; per benchmark 0.0 on VOC20, 3.0 and ``False`` on Cityscapes, ``False`` on
            ADE20K).
        columns: SAM runs on this many vertical strips of the image, each on its own (Trident:
            1; 2 on Cityscapes).
        rounding: the SAM cells kept, ``"floor"`` (Trident's: whole cells only) or ``"ceil"``
            (every cell touching the image), see
            :meth:`~ovdense.modeling.vfm.sam.SAMFeatures.last_attention`.
        head_chunk: attention heads computed at a time (memory; results do not depend on it).

    Raises:
        ValueError: a SAM size without ``checkpoint`` while ``pretrained``: one sentence naming
            the file and the config key.
    """

    def __init__(
        self,
        sam: str | VisionFoundationModel = "vit_b",
        checkpoint: str | os.PathLike | None = None,
        pretrained: bool = True,
        sam_kwargs: dict[str, Any] | None = None,
        cos_fac: float = TRIDENT_AFFINITY_DEFAULTS["cos_fac"],
        refine_neg_cos: bool = TRIDENT_AFFINITY_DEFAULTS["refine_neg_cos"],
        columns: int = 1,
        rounding: str = "floor",
        head_chunk: int = 4,
    ) -> None:
        super().__init__()
        if isinstance(sam, str):
            kind = sam[4:] if sam.startswith("sam_") else sam
            if kind not in SAM_ENCODERS:
                raise ValueError(f"sam must be one of {tuple(SAM_ENCODERS)}, got {sam!r}.")
            if checkpoint is None and pretrained:
                url = SAM_CHECKPOINTS[kind]
                raise ValueError(
                    f"Trident's aggregation needs the SAM {kind} checkpoint: download {url} and "
                    f"set model.aggregator_kwargs.checkpoint=/path/{os.path.basename(url)}."
                )
            encoder = load_sam_image_encoder(kind, checkpoint, pretrained, **(sam_kwargs or {}))
            sam = SAMFeatures(encoder)
        elif checkpoint is not None or sam_kwargs:
            raise ValueError("checkpoint and sam_kwargs are only used with a SAM size name.")
        if not isinstance(sam, SAMFeatures):
            raise TypeError(
                f"sam must be a SAM size or a SAMFeatures, got {type(sam).__name__}; wrap an "
                "image encoder with SAMFeatures(image_encoder)."
            )
        if int(columns) < 1:
            raise ValueError(f"columns must be >= 1, got {columns}.")
        if rounding not in ("floor", "ceil"):
            raise ValueError(f"rounding must be 'floor' or 'ceil', got {rounding!r}.")
        sam.requires_grad_(False)
        self.sam = sam.eval()
        self.cos_fac = float(cos_fac)
        self.refine_neg_cos = bool(refine_neg_cos)
        self.columns = int(columns)
        self.rounding = rounding
        self.head_chunk = int(head_chunk)

    def affinity(self, images01: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``(W [B, n, n], (gh, gw))`` for images ``[B, 3, H, W]`` in ``[0, 1]``
        (:func:`trident_affinity` of SAM's last attention)."""
        att = self.sam.last_attention(images01, self.rounding)
        w = trident_affinity(att, self.cos_fac, self.refine_neg_cos, head_chunk=self.head_chunk)
        return w, att.grid

    def mix(self, tokens: Tensor, images01: Tensor) -> Tensor:
        """One strip: ``tokens [B, C, h, w]`` resized to SAM's grid of ``images01`` and mixed
        by its affinity -> ``[B, C, gh, gw]``."""
        w, (gh, gw) = self.affinity(images01)
        x = F.interpolate(tokens.float(), size=(gh, gw), mode="bilinear", align_corners=False)
        b, c = x.shape[:2]
        out = x.flatten(2) @ w.transpose(-1, -2)  # [B, C, n]: out[:, :, m] = Σ_n W[m, n] x[n]
        return out.reshape(b, c, gh, gw).to(tokens.dtype)

    def forward(self, tokens: Tensor, images01: Tensor) -> Tensor:
        """Args:
            tokens: ``[B, C, h, w]`` spliced last-block tokens (before CLIP's final norm).
            images01: ``[B, 3, H, W]`` the images, RGB in ``[0, 1]``.

        Returns:
            ``[B, C, gh, gw]`` on SAM's grid (strips side by side with ``columns > 1``).
        """
        if tokens.ndim != 4 or images01.ndim != 4 or tokens.shape[0] != images01.shape[0]:
            raise ValueError(
                f"Expected tokens [B, C, h, w] and images [B, 3, H, W] of one batch, got "
                f"{tuple(tokens.shape)} and {tuple(images01.shape)}."
            )
        k = self.columns
        if k == 1:
            return self.mix(tokens, images01)
        w_img, w_tok = images01.shape[-1], tokens.shape[-1]
        if w_tok < k or w_img < k:
            raise ValueError(f"Cannot cut a map {w_tok} tokens wide into {k} columns.")
        outs = []
        for i in range(k):
            ti = tokens[..., w_tok * i // k : w_tok * (i + 1) // k]
            ii = images01[..., w_img * i // k : w_img * (i + 1) // k]
            outs.append(self.mix(ti, ii))
        heights = {o.shape[-2] for o in outs}
        if len(heights) != 1:
            raise ValueError(f"The {k} columns gave SAM grids of different heights {heights}.")
        return torch.cat(outs, dim=-1)

    def extra_repr(self) -> str:
        return (
            f"cos_fac={self.cos_fac}, refine_neg_cos={self.refine_neg_cos}, "
            f"columns={self.columns}, rounding={self.rounding!r}"
        )
