"""Segment Anything with open vocabularies: SAM's masks labelled by ovdense's dense features.

``model``: build SAM (official checkpoints, or tiny random models for tests).
``instances``: :class:`SamInstanceSegmenter` (SAM's automatic masks, labelled with any
vocabulary through any segmentor preset) and its :class:`Instances`.
``mask_source``: class-agnostic mask sources (:data:`MASK_SOURCES`: segment-anything ``"sam"``,
SAM 2 ``"sam2"``) and their on-disk cache (:class:`CachedMaskSource`).
``nms``: mask IoU and greedy mask NMS. ``coco``: RLE masks and COCO-style JSON.
``draw``: overlays with instance outlines and ``name score`` labels.
``sam3``: SAM 3 (optional ``sam3`` package) as a semantic segmentor and as a mask source.
"""

from .coco import coco_categories, decode_rle, encode_rle, instances_document, instances_to_coco
from .draw import draw_instances
from .instances import (
    SCORE_MODES,
    Instances,
    MaskGenerator,
    MaskGeneratorOptions,
    SamInstanceSegmenter,
    dense_image_features,
    masks_to_boxes,
)
from .mask_source import (
    MASK_SOURCES,
    CachedMaskSource,
    GridMaskSource,
    MaskSource,
    Sam2MaskSource,
    SamMaskSource,
    build_mask_source,
    masks_to_region_map,
)
from .model import SAM_KINDS, build_sam, missing_checkpoint_message, tiny_sam
from .nms import mask_iou, mask_nms
from .sam3 import SAM3MaskSource, SAM3Segmentor, build_sam3, tiny_sam3

__all__ = [
    "MASK_SOURCES",
    "SAM_KINDS",
    "SAM3MaskSource",
    "SAM3Segmentor",
    "SCORE_MODES",
    "CachedMaskSource",
    "GridMaskSource",
    "Instances",
    "MaskGenerator",
    "MaskGeneratorOptions",
    "MaskSource",
    "Sam2MaskSource",
    "SamInstanceSegmenter",
    "SamMaskSource",
    "build_mask_source",
    "build_sam",
    "build_sam3",
    "coco_categories",
    "decode_rle",
    "dense_image_features",
    "draw_instances",
    "encode_rle",
    "instances_document",
    "instances_to_coco",
    "mask_iou",
    "mask_nms",
    "masks_to_boxes",
    "masks_to_region_map",
    "missing_checkpoint_message",
    "tiny_sam",
    "tiny_sam3",
]
