"""Training-free open-vocabulary semantic segmentation (the SCLIP-family inference protocol):
a :class:`~ovdense.modeling.segmentors.Segmentor` built from an open_clip model."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from ..backbones import AttentionStrategy, dense_backbone_for
from ..heads import build_seg_head
from ..refiners import build_aggregator, build_label_refiner, build_refiner
from ..text import TextEncoder
from .base import (  # noqa: F401 - re-exported: their home was this module
    PRECISIONS,
    DecodeOrder,
    ImageFeatures,
    SegmentationOutput,
    Segmentor,
    check_unit_images,
    rescale_size,
    sliding_windows,
)

__all__ = [
    "ImageFeatures",
    "SegmentationOutput",
    "TrainingFreeSegmentor",
    "check_unit_images",
    "rescale_size",
    "sliding_windows",
]


class TrainingFreeSegmentor(Segmentor):
    """A :class:`Segmentor` built from an open_clip model: dense CLIP with a last-block
    attention strategy, its text tower, the cosine head (or any registered head), the common
    inference protocol of docs/protocols.md#common-inference-protocol.

    This class only builds the parts (the presets' constructor); everything else is
    :class:`Segmentor`'s.

    Args:
        clip: an open_clip model (see :func:`~ovdense.modeling.clip.load_clip`); its image tower
            becomes a dense backbone (:func:`dense_backbone_for`), its text tower a
            :class:`TextEncoder`.
        strategy, strategy_kwargs, pos_interp: last-block strategy and position interpolation.
        templates: prompt templates (name of a set or a list of format strings).
        short_side, max_long_side, window, stride, window_batch_size, logit_scale, prob_thd,
        area_thd, background_index, pamr, precision, post_refiner: see :class:`Segmentor`.
        text_cache_dir: on-disk cache of class embeddings (``None``: memory only).
        head: a registered head name (default ``"cosine"``) or a module: see
            :data:`~ovdense.modeling.heads.SEG_HEADS`.
        head_kwargs: constructor arguments of a named head.
        refiner: an optional feature refiner (a module, or a name of
            :data:`~ovdense.modeling.refiners.REFINERS` with ``refiner_kwargs``).
        refiner_kwargs: constructor arguments of a named refiner.
        decode_order: ``"ovdense"`` (default) or ``"paper"``: see :class:`Segmentor`.
        mask_source: class-agnostic masks per image (see :class:`Segmentor`), e.g.
            :class:`~ovdense.sam.mask_source.SamMaskSource`.
        label_refiner: a label refiner (a module, or a name of
            :data:`~ovdense.modeling.refiners.LABEL_REFINERS` with ``label_refiner_kwargs``),
            e.g. ``"region_vote"``.
        label_refiner_kwargs: constructor arguments of a named label refiner.
        aggregator: an optional splice aggregator (a module, or a name of
            :data:`~ovdense.modeling.refiners.AGGREGATORS` with ``aggregator_kwargs``): the
            splice-then-segment mode of :class:`Segmentor` (Trident).
        aggregator_kwargs: constructor arguments of a named aggregator.
    """

    def __init__(
        self,
        clip: nn.Module,
        strategy: str | AttentionStrategy = "vanilla",
        strategy_kwargs: dict[str, Any] | None = None,
        pos_interp: str = "size",
        templates: str | Sequence[str] = "openai_imagenet",
        short_side: int | None = 336,
        max_long_side: int | None = 2048,
        window: int | None = 224,
        stride: int | None = 112,
        window_batch_size: int = 8,
        logit_scale: float = 40.0,
        prob_thd: float = 0.0,
        area_thd: float | None = None,
        background_index: int | None = None,
        pamr: nn.Module | None = None,
        precision: str = "fp32",
        text_cache_dir: str | os.PathLike | None = None,
        *,
        head: str | nn.Module = "cosine",
        head_kwargs: dict[str, Any] | None = None,
        refiner: str | nn.Module | None = None,
        refiner_kwargs: dict[str, Any] | None = None,
        decode_order: DecodeOrder = "ovdense",
        post_refiner: nn.Module | None = None,
        mask_source: Callable[[np.ndarray], Tensor] | None = None,
        label_refiner: str | nn.Module | None = None,
        label_refiner_kwargs: dict[str, Any] | None = None,
        aggregator: str | nn.Module | None = None,
        aggregator_kwargs: dict[str, Any] | None = None,
    ) -> None:
        # NOTE: the cheap parts first, so that a bad head / refiner name fails before the
        # backbone and text encoder are built
        head_module = build_seg_head(head, **(head_kwargs or {}))
        refiner_module = build_refiner(refiner, **(refiner_kwargs or {}))
        label_module = build_label_refiner(label_refiner, **(label_refiner_kwargs or {}))
        aggregator_module = build_aggregator(aggregator, **(aggregator_kwargs or {}))
        super().__init__(
            backbone=dense_backbone_for(
                clip, strategy=strategy, strategy_kwargs=strategy_kwargs, pos_interp=pos_interp
            ),
            text_encoder=TextEncoder(clip, templates=templates, cache_dir=text_cache_dir),
            head=head_module,
            refiner=refiner_module,
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
            mask_source=mask_source,
            label_refiner=label_module,
            aggregator=aggregator_module,
        )
