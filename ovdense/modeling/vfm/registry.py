"""The registry of vision foundation models and :func:`build_vfm`.

The families register their builders on import (``timm_vit.py``: DINO / DINOv2, ``sam.py``:
SAM); ``import ovdense.modeling.vfm`` imports them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ...utils.registry import Registry, unknown_name_message
from .base import VisionFoundationModel

__all__ = ["VFMS", "build_vfm", "list_vfms"]

VFMS: Registry[Callable[..., VisionFoundationModel]] = Registry("vision foundation model")
VFMS.__doc__ = """Registered objects are builders ``fn(checkpoint=None, pretrained=True, **kwargs)``
returning a :class:`VisionFoundationModel`; ``pretrained=False`` (random weights) must work
offline. The registry sets the builder's ``name``."""


def list_vfms() -> list[str]:
    """Names accepted by :func:`build_vfm`."""
    return VFMS.names()


def build_vfm(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = True,
    **kwargs: Any,
) -> VisionFoundationModel:
    """Build a frozen vision foundation model by name (eval mode, ``requires_grad=False``).

    Args:
        name: one of :func:`list_vfms` (e.g. ``"dino_vitb8"``, ``"dinov2_vitb14_reg"``,
            ``"sam_vit_b"``).
        checkpoint: a local weights file (read with ``weights_only=True``); required for SAM.
        pretrained: download the weights (timm models) when no checkpoint is given;
            ``False`` keeps random weights (tests).
        **kwargs: wrapper options (``feature``, ``pos_interp`` for timm models) and
            architecture arguments: ``timm.create_model``'s for timm models (e.g. ``img_size``,
            ``depth``), ``ImageEncoderViT``'s for SAM.

    Example::

        vfm = build_vfm("dino_vitb8")  # or checkpoint="/data/dino_vitbase8_pretrain.pth"
        feats = vfm(images01)  # [B, 768, ceil(H / 8), ceil(W / 8)]
    """
    if not isinstance(name, str) or name not in VFMS:
        raise KeyError(unknown_name_message("vision foundation model", str(name), list_vfms()))
    vfm = VFMS.get(name)(checkpoint=checkpoint, pretrained=pretrained, **kwargs)
    vfm.requires_grad_(False)
    return vfm.eval()
