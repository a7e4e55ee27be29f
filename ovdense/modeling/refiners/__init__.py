"""Refiners: post-process dense predictions (PAMR; DINO-guided pooling comes here too)."""

from .pamr import PAMR

__all__ = ["PAMR"]
from .clip_dinoiser import CLIPDINOiserHead  # noqa: E402

__all__ += ["CLIPDINOiserHead"]
