"""Segmentors: parts (backbone, refiner, head, text encoder, decoding rules) composed into a
full inference pipeline. :class:`Segmentor` takes the parts; :class:`TrainingFreeSegmentor`
and :class:`CLIPDINOiserSegmentor` build them from an open_clip model (the presets)."""

from .base import (
    DECODE_ORDERS,
    ImageFeatures,
    SaliencyRule,
    SegmentationOutput,
    Segmentor,
    apply_background_rule,
    check_unit_images,
    pad_to_multiple,
    rescale_size,
    sliding_windows,
    stitch_windows,
)
from .catseg import (
    CATSegModel,
    build_catseg_segmentor,
    catseg_head_for,
    finetune_clip,
    load_catseg_checkpoint,
)
from .clip_dinoiser import CLIPDINOiserBackbone, CLIPDINOiserFeatures, CLIPDINOiserSegmentor
from .training_free import TrainingFreeSegmentor

__all__ = [
    "DECODE_ORDERS",
    "CATSegModel",
    "CLIPDINOiserBackbone",
    "CLIPDINOiserFeatures",
    "CLIPDINOiserSegmentor",
    "ImageFeatures",
    "SaliencyRule",
    "SegmentationOutput",
    "Segmentor",
    "TrainingFreeSegmentor",
    "apply_background_rule",
    "build_catseg_segmentor",
    "catseg_head_for",
    "check_unit_images",
    "finetune_clip",
    "load_catseg_checkpoint",
    "pad_to_multiple",
    "rescale_size",
    "sliding_windows",
    "stitch_windows",
]
