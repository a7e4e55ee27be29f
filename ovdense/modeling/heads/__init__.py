"""Heads: modules mapping dense features + class embeddings to predictions.

Segmentation heads are registered in :data:`SEG_HEADS` (contract in its docstring) and mounted
in the ``head`` slot of :class:`~ovdense.modeling.segmentors.Segmentor`.
"""

from .catseg import CATSegHead
from .cosine import CosineSegHead, max_over_synonyms
from .region import RegionClassifier, box_features, mask_features
from .registry import SEG_HEADS, build_seg_head, list_seg_heads

__all__ = [
    "SEG_HEADS",
    "CATSegHead",
    "CosineSegHead",
    "RegionClassifier",
    "box_features",
    "build_seg_head",
    "list_seg_heads",
    "mask_features",
    "max_over_synonyms",
]
