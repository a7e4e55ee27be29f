"""Heads: modules mapping dense features + class embeddings to predictions."""

from .cosine import CosineSegHead, max_over_synonyms
from .region import RegionClassifier, box_features, mask_features

__all__ = [
    "CosineSegHead",
    "RegionClassifier",
    "box_features",
    "mask_features",
    "max_over_synonyms",
]
