"""Segmentors: backbone + text encoder + head composed into a full inference pipeline."""

from .training_free import (
    ImageFeatures,
    SegmentationOutput,
    TrainingFreeSegmentor,
    rescale_size,
    sliding_windows,
)

__all__ = [
    "ImageFeatures",
    "SegmentationOutput",
    "TrainingFreeSegmentor",
    "rescale_size",
    "sliding_windows",
]
