"""Refiners: post-process dense predictions (PAMR; DINO-guided pooling comes here too)."""

from .pamr import PAMR

__all__ = ["PAMR"]
