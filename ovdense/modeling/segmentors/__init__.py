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
from .clip_dinoiser import CLIPDINOiserFeatures, CLIPDINOiserSegmentor  # noqa: E402

__all__ += ["CLIPDINOiserFeatures", "CLIPDINOiserSegmentor"]
