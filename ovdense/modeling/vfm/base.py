"""The vision foundation model contract and the checkpoint reading the families share."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...utils.weights import read_state_dict as read_weights

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "VisionFoundationModel"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VisionFoundationModel(nn.Module):
    """Base class: RGB images in ``[0, 1]`` -> patch features on the model's own grid.

    Attributes:
        patch_size: input pixels per feature cell (at the resolution the model runs at).
        embed_dim: channels ``C`` of the features.
        mean, std: the per-channel normalisation the model was trained with (``[0, 1]`` units).

    Padding convention (every ViT wrapper): after normalisation the image is padded with zeros at
    the bottom and right up to a multiple of ``patch_size``, so the grid is
    ``(ceil(H / p), ceil(W / p))`` and feature ``(i, j)`` covers pixels
    ``[i p, (i + 1) p) x [j p, (j + 1) p)`` (the last row / column partly padding). Nothing is
    resized. SAM is the exception (it runs at a fixed 1024 input): see :class:`SAMFeatures`.
    """

    patch_size: int
    embed_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def forward(self, images01: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Args:
            images01: ``[B, 3, H, W]`` RGB in ``[0, 1]``.

        Returns:
            ``[B, embed_dim, h, w]`` with ``(h, w) = self.output_grid(H, W)``.
        """
        raise NotImplementedError

    def output_grid(self, height: int, width: int) -> tuple[int, int]:
        """The feature grid ``(h, w)`` returned for an ``height x width`` input."""
        p = self.patch_size
        return math.ceil(height / p), math.ceil(width / p)

    def normalize(self, images01: Tensor) -> Tensor:
        """``(images01 - mean) / std`` per channel, ``[B, 3, H, W]``."""
        mean = torch.tensor(self.mean, device=images01.device, dtype=images01.dtype)
        std = torch.tensor(self.std, device=images01.device, dtype=images01.dtype)
        return (images01 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)

    def pad_to_patches(self, images: Tensor) -> Tensor:
        """Zero-pad ``[B, 3, H, W]`` at the bottom and right to a multiple of ``patch_size``."""
        h, w = images.shape[-2:]
        gh, gw = self.output_grid(h, w)
        p = self.patch_size
        if (gh * p, gw * p) == (h, w):
            return images
        return F.pad(images, (0, gw * p - w, 0, gh * p - h))

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @staticmethod
    def _check_images(images01: Tensor) -> None:
        if images01.ndim != 4 or images01.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W] RGB, got {tuple(images01.shape)}.")

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, embed_dim={self.embed_dim}"


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A VFM checkpoint as a flat state dict (timm, official DINO ``{"teacher": ...}``,
    ``state_dict`` / ``model`` nesting; ``module.`` / ``backbone.`` prefixes stripped)."""
    return read_weights(
        path,
        what="VFM checkpoint",
        nesting=("teacher", "state_dict", "model", "module"),
        strip_prefixes=("module.", "backbone."),
    )


def check_file(path: str | os.PathLike, what: str, source: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"{what} checkpoint not found: {file}. Get the official file from {source}."
        )
    return file
