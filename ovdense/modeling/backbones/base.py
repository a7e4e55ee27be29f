"""The dense-backbone contract shared by every backbone in ovdense."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class DenseFeatures:
    """What a dense backbone returns for a batch of images.

    Attributes:
        dense: ``[B, D, h, w]`` per-patch embeddings in the joint image-text space,
            L2-normalised over ``D``.
        stride: input pixels per feature cell (the patch size for a ViT).
        global_embed: ``[B, D]`` image-level embedding (the CLS token through the same last
            block), L2-normalised, or ``None``.
        intermediates: requested block outputs, ``{"block{i}": [B, C, h, w]}`` (patch tokens of
            block ``i``'s output, 0-based, CLS dropped).
    """

    dense: Tensor
    stride: int
    global_embed: Tensor | None = None
    intermediates: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureInfo:
    """timm-style description of one output: channels and reduction w.r.t. the input."""

    name: str
    num_chs: int
    reduction: int


class DenseBackbone(nn.Module):
    """Base class: images ``[B, 3, H, W]`` (normalised with ``mean``/``std``) -> DenseFeatures.

    Subclasses set ``embed_dim`` (D), ``patch_size``, ``mean``, ``std`` and implement
    :meth:`forward`. Any ``H, W`` of at least one patch must work.
    """

    embed_dim: int
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def forward(self, images: Tensor) -> DenseFeatures:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def feature_info(self) -> list[FeatureInfo]:
        return [FeatureInfo("dense", self.embed_dim, self.patch_size)]

    def normalize(self, images: Tensor) -> Tensor:
        """Map RGB images in ``[0, 1]`` (``[B, 3, H, W]``) to this backbone's input space."""
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std
