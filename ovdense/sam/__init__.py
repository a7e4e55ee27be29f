"""Segment Anything with open vocabularies: SAM's masks labelled by ovdense's dense features.

``model``: build SAM (official checkpoints, or tiny random models for tests).
``instances``: :class:`SamInstanceSegmenter` (SAM's automatic masks, labelled with any
vocabulary through any segmentor preset) and its :class:`Instances`.
``nms``: mask IoU and greedy mask NMS. ``coco``: RLE masks and COCO-style JSON.
``draw``: overlays with instance outlines and ``name score`` labels.
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
from .model import SAM_KINDS, build_sam, missing_checkpoint_message, tiny_sam
from .nms import mask_iou, mask_nms

__all__ = [
    "SAM_KINDS",
    "SCORE_MODES",
    "Instances",
    "MaskGenerator",
    "MaskGeneratorOptions",
    "SamInstanceSegmenter",
    "build_sam",
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
    "missing_checkpoint_message",
    "tiny_sam",
]
