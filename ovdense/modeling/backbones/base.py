"""The dense-backbone contract shared by every backbone in ovdense."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import Tensor, nn

from ..layers.cache import grid_cached  # noqa: F401  (re-export; its home is layers/)


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
        dense_norm: ``[B, 1, h, w]`` the L2 norm of each cell's projected feature before the
            normalisation (``dense * dense_norm`` is the unnormalised projection, what
            CAT-Seg's image guidance reads), or ``None`` when the backbone does not give it.
    """

    dense: Tensor
    stride: int
    global_embed: Tensor | None = None
    intermediates: dict[str, Tensor] = field(default_factory=dict)
    dense_norm: Tensor | None = None

    def unnormalized(self) -> Tensor:
        """``dense * dense_norm``: ``[B, D, h, w]`` projected features before the L2
        normalisation.

        Raises:
            ValueError: the backbone gave no ``dense_norm``.
        """
        if self.dense_norm is None:
            raise ValueError(
                "These dense features carry no dense_norm (the backbone normalises without "
                "keeping the norms); use a CLIP tower backbone (dense_backbone_for)."
            )
        return self.dense * self.dense_norm


def _flatten_features(f: DenseFeatures) -> tuple[list, int]:
    return [f.dense, f.global_embed, f.intermediates, f.dense_norm], f.stride


def _unflatten_features(children: Iterable[Any], stride: int) -> DenseFeatures:
    dense, global_embed, intermediates, dense_norm = children
    return DenseFeatures(dense, stride, global_embed, intermediates, dense_norm)


def _flatten_features_with_keys(f: DenseFeatures) -> tuple[list, int]:
    children, stride = _flatten_features(f)
    names = ("dense", "global_embed", "intermediates", "dense_norm")
    return [(pytree.GetAttrKey(n), c) for n, c in zip(names, children, strict=True)], stride


# NOTE: a pytree node so that torch.export / torch.compile can return DenseFeatures from a
# traced forward (the stride is static metadata, the tensors are the leaves).
pytree.register_pytree_node(
    DenseFeatures,
    _flatten_features,
    _unflatten_features,
    serialized_type_name="ovdense.modeling.backbones.base.DenseFeatures",
    flatten_with_keys_fn=_flatten_features_with_keys,
)


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


def check_patch_images(images: Tensor, patch_size: int) -> None:
    """Raise a clear ``ValueError`` unless ``images`` is ``[B, 3, H, W]`` with
    ``H, W >= patch_size`` (what every ViT backbone of ovdense accepts)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}.")
    h, w = images.shape[-2:]
    if h < patch_size or w < patch_size:
        raise ValueError(
            f"Image of {h}x{w} pixels is smaller than one {patch_size}x{patch_size} patch; "
            "resize it up (e.g. short_side) before the backbone."
        )


def normalize_out_indices(out_indices: Sequence[int], num_blocks: int) -> tuple[int, ...]:
    """Block indices (negative counted from the end) as sorted, unique ``0..num_blocks-1``.

    Raises:
        ValueError: An index outside the tower.
    """
    norm = set()
    for i in out_indices:
        j = i + num_blocks if i < 0 else i
        if not 0 <= j < num_blocks:
            raise ValueError(f"out_indices {i} out of range for {num_blocks} blocks.")
        norm.add(j)
    return tuple(sorted(norm))
