"""CLIP-DINOiser inference (Wysoczańska et al., ECCV 2024; docs/methods.md#clip-dinoiser) as a
composition of :class:`Segmentor` parts:

* backbone: :class:`CLIPDINOiserBackbone`, MaskCLIP (strategy ``"maskclip"``, position
  embeddings interpolated to the target size) that also returns the block −3 ``ln_2`` tokens
  and the unnormalised projection as intermediates;
* refiner: :class:`~ovdense.modeling.refiners.CLIPDINOiserRefiner`, the trained head's
  correlation pooling, with its saliency as the auxiliary map ``"background"``;
* head: the cosine head;
* decoding: :class:`SaliencyRule` (top probability < δ and not salient -> background) applied
  as ``background_rule`` says, in ``decode_order`` ``"paper"`` (the official order, default) or
  ``"ovdense"`` (see :class:`Segmentor` and docs/clip_dinoiser_protocol.md).

:class:`CLIPDINOiserSegmentor` is the preset's constructor: it builds these parts from an
open_clip model and a head checkpoint; it adds no inference code of its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, cast

import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import DenseCLIPBackbone
from ..backbones.base import DenseFeatures
from ..heads import CosineSegHead
from ..refiners.clip_dinoiser import (
    FEATURE_KEY,
    VALUES_KEY,
    CLIPDINOiserHead,
    CLIPDINOiserRefiner,
)
from ..text import BACKGROUND_NAMES, TextEncoder
from .base import (
    DECODE_ORDERS,
    DecodeOrder,
    ImageFeatures,
    SaliencyRule,
    Segmentor,
    apply_background_rule,
)

__all__ = [
    "BACKGROUND_NAMES",
    "DECODE_ORDERS",
    "CLIPDINOiserBackbone",
    "CLIPDINOiserFeatures",
    "CLIPDINOiserSegmentor",
    "apply_background_rule",
]

#: Former name of the features of a CLIP-DINOiser segmentor: :class:`ImageFeatures`, whose
#: ``aux["background"]`` (also ``.background``) holds the window saliency maps.
CLIPDINOiserFeatures = ImageFeatures


class CLIPDINOiserBackbone(DenseCLIPBackbone):
    """MaskCLIP backbone that also returns what CLIP-DINOiser's head reads.

    A forward hook on ``resblocks[feature_block].ln_2`` captures the normalised tokens entering
    that block's MLP (``[B, 1 + N, C]``). ``forward`` returns the MaskCLIP features with
    ``intermediates[FEATURE_KEY]`` (those tokens, ``[B, C, gh, gw]``) and
    ``intermediates[VALUES_KEY]`` (the projected features before L2 normalisation,
    ``[B, D, gh, gw]``), the inputs of :class:`~ovdense.modeling.refiners.CLIPDINOiserRefiner`.

    Args:
        clip: open_clip model or ViT tower (shared).
        feature_block: index of the block whose ``ln_2`` output feeds the head (−3).
    """

    def __init__(self, clip: nn.Module, feature_block: int = -3) -> None:
        super().__init__(clip, strategy="maskclip", pos_interp="size")
        n = self.num_blocks
        j = feature_block + n if feature_block < 0 else feature_block
        if not 0 <= j < n - 1:
            raise ValueError(
                f"feature_block {feature_block} must be a block before the last one of this "
                f"{n}-block ViT."
            )
        self.feature_block = j

    def block_features(
        self, images: Tensor, extras: dict[str, Any] | None = None
    ) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """Last-block tokens and the hooked block features.

        Returns:
            ``(tokens [B, 1 + N, C], feats [B, C, gh, gw], grid)``: the MaskCLIP tokens before
            ``ln_post`` and the ``ln_2`` output of ``feature_block`` with CLS dropped.
        """
        captured: list[Tensor] = []
        ln_2 = self.visual.transformer.resblocks[self.feature_block].ln_2
        handle = ln_2.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            tokens, grid, _ = self.forward_tokens(images, extras)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(
                f"Expected one call of block {self.feature_block}'s ln_2, saw {len(captured)}."
            )
        x = captured[0]
        if not getattr(self.visual.transformer, "batch_first", True):
            x = x.transpose(0, 1)
        if x.shape[1] != 1 + grid[0] * grid[1]:
            raise RuntimeError(f"Hooked tokens {tuple(x.shape)} do not fit the grid {grid}.")
        return tokens, self._to_nchw(x, grid), grid

    def forward(self, images: Tensor, extras: dict[str, Any] | None = None) -> DenseFeatures:
        """Args:
            images: ``[B, 3, H, W]`` normalised with ``self.mean``/``self.std``.

        Returns:
            :class:`DenseFeatures`: ``dense`` ``[B, D, gh, gw]`` (MaskCLIP, L2-normalised),
            ``intermediates`` ``{FEATURE_KEY: [B, C, gh, gw], VALUES_KEY: [B, D, gh, gw]}``.
        """
        tokens, feats, grid = self.block_features(images, extras)
        x = self.project(tokens)
        dense = x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, grid[0], grid[1])
        return DenseFeatures(
            dense=F.normalize(dense, dim=1),
            stride=images.shape[-2] // grid[0],
            global_embed=F.normalize(x[:, 0], dim=-1),
            intermediates={FEATURE_KEY: feats, VALUES_KEY: dense},
        )


class CLIPDINOiserSegmentor(Segmentor):
    """CLIP-DINOiser: MaskCLIP + correlation pooling + saliency background (inference).

    The preset's constructor: a :class:`Segmentor` with backbone :class:`CLIPDINOiserBackbone`,
    refiner :class:`~ovdense.modeling.refiners.CLIPDINOiserRefiner`, the cosine head and a
    :class:`SaliencyRule`; no inference code of its own.

    Args:
        clip: an open_clip model (OpenCLIP ViT-B-16 ``laion2b_s34b_b88k`` for the release).
        head_checkpoint: the released ``last.pt``, a converted head state dict, or a
            ``model_*.pt`` of ovdense's CLIP-DINOiser training (its head is read).
        head: a :class:`CLIPDINOiserHead` object instead of ``head_checkpoint`` (tests,
            training). With neither, the segmentor is built but refuses to run.
        feature_block: block whose ``ln_2`` output feeds the head (−3).
        gamma, delta: correlation threshold and background-rule confidence bound; used to build
            the head from ``head_checkpoint`` (a given ``head`` keeps its own values; the rule
            takes the head's ``delta``).
        background_rule: when the rule applies (``None``: the class ``background_index`` or the
            one named e.g. ``"background"`` exists; ``True``; ``False``; ``"force"``): see
            :class:`Segmentor`.
        decode_order: ``"paper"`` (default, because it reproduces the published evaluation:
            the official code's order) or ``"ovdense"``: see :class:`Segmentor` (docs/
            clip_dinoiser_protocol.md has the official file / line of each step). Which order
            gives the better mIoU has not been measured on real benchmarks.
        templates, text_cache_dir: the :class:`TextEncoder`'s.
        short_side, max_long_side, window, stride, window_batch_size, logit_scale, prob_thd,
        area_thd, background_index, pamr, precision, post_refiner: see :class:`Segmentor`.

    ``self.dinoiser_head`` is the head (``self.refiner.head``); ``self.head`` is the cosine
    head.
    """

    def __init__(
        self,
        clip: nn.Module,
        head_checkpoint: str | os.PathLike | None = None,
        head: CLIPDINOiserHead | None = None,
        feature_block: int = -3,
        gamma: float = 0.2,
        delta: float = 0.99,
        background_rule: bool | str | None = None,
        decode_order: DecodeOrder = "paper",
        templates: str | Sequence[str] = "openai_imagenet",
        short_side: int | None = 448,
        max_long_side: int | None = 2048,
        window: int | None = 448,
        stride: int | None = 224,
        window_batch_size: int = 8,
        logit_scale: float = 100.0,
        prob_thd: float = 0.0,
        area_thd: float | None = None,
        background_index: int | None = None,
        pamr: nn.Module | None = None,
        precision: str = "fp32",
        text_cache_dir: str | os.PathLike | None = None,
        *,
        post_refiner: nn.Module | None = None,
    ) -> None:
        if head is not None and head_checkpoint is not None:
            raise ValueError("Give either head or head_checkpoint, not both.")
        backbone = CLIPDINOiserBackbone(clip, feature_block=feature_block)
        width = int(backbone.width)
        if head_checkpoint is not None:
            refiner = CLIPDINOiserRefiner.from_checkpoint(
                head_checkpoint, width, gamma=gamma, delta=delta
            )
        else:
            refiner = CLIPDINOiserRefiner(head)
        if refiner.head is not None and refiner.head.width != width:
            raise ValueError(
                f"The CLIP-DINOiser head is for ViT width {refiner.head.width}, this ViT has "
                f"width {width}."
            )
        super().__init__(
            backbone=backbone,
            text_encoder=TextEncoder(clip, templates=templates, cache_dir=text_cache_dir),
            head=CosineSegHead(),
            refiner=refiner,
            saliency_rule=SaliencyRule(
                delta=refiner.head.delta if refiner.head is not None else delta
            ),
            background_rule=background_rule,
            decode_order=decode_order,
            short_side=short_side,
            max_long_side=max_long_side,
            window=window,
            stride=stride,
            window_batch_size=window_batch_size,
            logit_scale=logit_scale,
            prob_thd=prob_thd,
            area_thd=area_thd,
            background_index=background_index,
            pamr=pamr,
            precision=precision,
            post_refiner=post_refiner,
        )

    @property
    def dinoiser_head(self) -> CLIPDINOiserHead | None:
        """The correlation / background head (``None`` until one is given)."""
        # always a CLIPDINOiserRefiner: __init__ builds it
        return cast(CLIPDINOiserRefiner, self.refiner).head

    def background_map(self, feats: ImageFeatures) -> Tensor:
        """Saliency at the input size ``[B, 1, H, W]``: ``aux_map(feats, "background")``."""
        if feats.background is None:
            raise ValueError("These features carry no background maps.")
        return self.aux_map(feats, "background")
