"""Heads: modules mapping dense features + class embeddings to predictions."""

from .cosine import CosineSegHead, max_over_synonyms

__all__ = ["CosineSegHead", "max_over_synonyms"]
