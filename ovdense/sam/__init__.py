"""Segment Anything with open vocabularies: SAM's masks labelled by ovdense's dense features.

``model``: build SAM (official checkpoints, or tiny random models for tests).
"""

from .model import SAM_KINDS, build_sam, missing_checkpoint_message, tiny_sam

__all__ = ["SAM_KINDS", "build_sam", "missing_checkpoint_message", "tiny_sam"]
