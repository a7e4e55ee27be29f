"""Refiners: post-process dense predictions (PAMR; DINO-guided pooling comes here too)."""

from .pamr import PAMR

__all__ = ["PAMR"]
from .clip_dinoiser import CLIPDINOiserHead  # noqa: E402

__all__ += ["CLIPDINOiserHead"]
from .found import FOUNDSaliency, found_saliency  # noqa: E402

__all__ += ["FOUNDSaliency", "found_saliency"]
