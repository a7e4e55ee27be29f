"""Compatibility re-exports: the vision foundation models live in :mod:`ovdense.modeling.vfm`
(``timm_vit.py``: DINO / DINOv2, ``sam.py``: SAM, ``registry.py``: ``build_vfm``); import them
from there."""

from ..vfm import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SAM_CHECKPOINTS,
    VFMS,
    DINOFeatures,
    DINOv2Features,
    LastBlockOutputs,
    SAMFeatures,
    TimmViTFeatures,
    VisionFoundationModel,
    build_vfm,
    list_vfms,
    load_sam_image_encoder,
    load_timm_vit,
)
from ..vfm.timm_vit import TIMM_FEATURES, TIMM_POS_INTERP

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SAM_CHECKPOINTS",
    "TIMM_FEATURES",
    "TIMM_POS_INTERP",
    "VFMS",
    "DINOFeatures",
    "DINOv2Features",
    "LastBlockOutputs",
    "SAMFeatures",
    "TimmViTFeatures",
    "VisionFoundationModel",
    "build_vfm",
    "list_vfms",
    "load_sam_image_encoder",
    "load_timm_vit",
]
