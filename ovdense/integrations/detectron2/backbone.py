"""``OVDenseCLIPBackbone``: ovdense's frozen dense CLIP ViT (+ F-ViT's simple feature pyramid)
as a detectron2 ``Backbone``.

Inputs are the meta-architecture's normalised images ``[B, 3, H, W]`` (``pixel_mean`` /
``pixel_std`` of the CLIP times 255, ``input_format="RGB"``; :func:`clip_pixel_stats` gives
them), padded to :attr:`~OVDenseCLIPBackbone.size_divisibility`. Outputs, named as detectron2's
FPN names them (``p<log2 stride>``):

- the pyramid levels ``[B, out_channels, H / s, W / s]``: four tapped blocks resampled by
  ``scales`` (F-ViT: 4, 2, 1, 0.5 -> strides p/4 .. 2p) through an FPN, plus a max-pooled level
  at twice the coarsest stride (ViT-B/16: ``p2`` .. ``p6``);
- ``dense_feature`` (default ``"clip_dense"``): the CLIP's dense image-text embeddings
  ``[B, D, H / p, W / p]`` (the last block through the ``strategy``), which the open-vocabulary
  ROI heads pool for F-ViT's test-time ensemble and the segmentation heads score against text.

``scales=()`` builds no pyramid (segmentation only: the dense map alone).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor, nn

from ...modeling.backbones.clip_vit import dense_backbone_for
from ...modeling.clip import load_clip
from ...modeling.detection.fvit import default_taps
from ...modeling.detection.pyramid import SimpleFeaturePyramid

__all__ = ["OVDenseCLIPBackbone", "build_ovdense_clip_backbone", "clip_pixel_stats"]


class OVDenseCLIPBackbone(Backbone):
    """A frozen dense CLIP image tower with a simple feature pyramid (detectron2 ``Backbone``).

    Args:
        clip: the open_clip model (or its ``.visual``), e.g. from
            :func:`~ovdense.modeling.clip.load_clip`; only the image tower is kept.
        strategy: the dense last block (F-ViT: ``"maskclip"``); any ovdense strategy name.
        out_indices: the tapped blocks, one per scale (default: F-ViT's 3, 5, 7, 11 for 12
            blocks, spread alike over other depths; the last tap goes through ``strategy``).
        scales: the pyramid's resampling of each tap, among 4, 2, 1, 0.5 (``()``: no pyramid).
        out_channels: channels of every pyramid level (F-ViT: 256).
        norm: batch norm in the pyramid (F-ViT: SyncBN).
        strategy_kwargs, pos_interp: see :func:`~ovdense.modeling.backbones.dense_backbone_for`.
        dense_feature: the output name of the dense CLIP map (``None``: not returned).
        frozen: no gradient into the CLIP and its tower always in eval mode (F-ViT).
    """

    def __init__(
        self,
        clip: nn.Module,
        strategy: str = "maskclip",
        out_indices: Sequence[int] | None = None,
        scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        out_channels: int = 256,
        norm: bool = True,
        strategy_kwargs: dict[str, Any] | None = None,
        pos_interp: str = "size",
        dense_feature: str | None = "clip_dense",
        frozen: bool = True,
    ) -> None:
        super().__init__()
        visual = getattr(clip, "visual", clip)
        scales = tuple(float(s) for s in scales)
        if scales:
            probe = dense_backbone_for(visual, strategy, strategy_kwargs, pos_interp)
            taps = (
                tuple(out_indices)
                if out_indices is not None
                else default_taps(probe.num_blocks)[-len(scales) :]
            )
            if len(taps) != len(scales):
                raise ValueError(
                    f"out_indices must name one block per scale ({len(scales)}), got {list(taps)}."
                )
        else:
            taps = ()
        self.clip = dense_backbone_for(visual, strategy, strategy_kwargs, pos_interp, taps)
        n = self.clip.num_blocks
        self.out_indices = tuple(i if i >= 0 else i + n for i in taps)
        self.frozen = bool(frozen)
        if self.frozen:
            self.clip.requires_grad_(False).eval()
        patch = int(self.clip.patch_size)
        self.pyramid = (
            SimpleFeaturePyramid(self.clip.width, out_channels, scales, norm=norm)
            if scales
            else None
        )
        self._out_feature_strides: dict[str, int] = {}
        self._out_feature_channels: dict[str, int] = {}
        if self.pyramid is not None:
            strides = self.pyramid.strides(patch)
            exact = [patch / s for s in scales] + [2 * patch / min(scales)]
            for s, e in zip(strides, exact):
                if s != e or s & (s - 1):
                    raise ValueError(
                        f"Patch {patch} with scales {list(scales)} gives strides "
                        f"{[round(v, 2) for v in exact]}; detectron2's ROIPooler needs whole "
                        "powers of two (use a patch-16 or patch-8 CLIP, or other scales)."
                    )
                name = f"p{int(math.log2(s))}"
                self._out_feature_strides[name] = s
                self._out_feature_channels[name] = int(out_channels)
        if dense_feature is not None:
            if dense_feature in self._out_feature_strides:
                raise ValueError(f"dense_feature {dense_feature!r} names a pyramid level.")
            self._out_feature_strides[dense_feature] = patch
            self._out_feature_channels[dense_feature] = int(self.clip.embed_dim)
        if not self._out_feature_strides:
            raise ValueError("The backbone returns nothing: give scales or a dense_feature.")
        self._out_features = list(self._out_feature_strides)
        self.dense_feature = dense_feature
        # the pyramid's 0.5 level and the pooled one need even grids (ovdense's F-ViT: 4 x patch)
        self._size_divisibility = 4 * patch if self.pyramid is not None else patch

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def mean(self) -> tuple[float, ...]:
        """The CLIP's normalisation mean, in ``[0, 1]`` units."""
        return tuple(self.clip.mean)

    @property
    def std(self) -> tuple[float, ...]:
        """The CLIP's normalisation std, in ``[0, 1]`` units."""
        return tuple(self.clip.std)

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=stride)
            for name, stride in self._out_feature_strides.items()
        }

    def train(self, mode: bool = True) -> OVDenseCLIPBackbone:
        super().train(mode)
        if self.frozen:
            self.clip.eval()  # frozen CLIP: dropout / statistics never change
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Args: ``x`` ``[B, 3, H, W]`` normalised, ``H`` and ``W`` multiples of
        :attr:`size_divisibility`. Returns ``{name: [B, C, H / stride, W / stride]}`` in the
        order of :meth:`output_shape`."""
        with torch.set_grad_enabled(not self.frozen and torch.is_grad_enabled()):
            feats = self.clip(x)
        out: dict[str, Tensor] = {}
        if self.pyramid is not None:
            taps = [feats.intermediates[f"block{i}"] for i in self.out_indices]
            if self.frozen:
                taps = [t.detach() for t in taps]
            levels = self.pyramid(taps)
            pyramid_names = [n for n in self._out_features if n != self.dense_feature]
            out.update(zip(pyramid_names, levels.values()))
        if self.dense_feature is not None:
            out[self.dense_feature] = feats.dense
        return out


def clip_pixel_stats(backbone: OVDenseCLIPBackbone | nn.Module) -> dict[str, list[float]]:
    """``{"pixel_mean", "pixel_std"}`` for detectron2's meta-architectures (0-255 RGB units)
    from a CLIP (or this backbone)."""
    tower = backbone if isinstance(backbone, OVDenseCLIPBackbone) else None
    if tower is None:
        visual = getattr(backbone, "visual", backbone)
        dense = dense_backbone_for(visual)
        mean, std = tuple(dense.mean), tuple(dense.std)
    else:
        mean, std = tower.mean, tower.std
    return {"pixel_mean": [255.0 * m for m in mean], "pixel_std": [255.0 * s for s in std]}


def load_clip_from_cfg(cfg: Any) -> nn.Module:
    """The CLIP named by ``cfg.MODEL.OVDENSE.CLIP`` (a yacs config, see
    :func:`~ovdense.integrations.detectron2.add_ovdense_config`)."""
    c = cfg.MODEL.OVDENSE.CLIP
    if c.CONFIG:
        return load_clip(config=json.loads(c.CONFIG), seed=int(c.SEED))
    return load_clip(c.MODEL_NAME or None, c.PRETRAINED or None, checkpoint=c.CHECKPOINT or None)


@BACKBONE_REGISTRY.register()
def build_ovdense_clip_backbone(cfg: Any, input_shape: ShapeSpec) -> OVDenseCLIPBackbone:
    """``MODEL.BACKBONE.NAME = "build_ovdense_clip_backbone"`` (yacs configs): the backbone
    from ``cfg.MODEL.OVDENSE`` (``CLIP``, ``STRATEGY``, ``OUT_INDICES``, ``SCALES``,
    ``PYRAMID_CHANNELS``, ``PYRAMID_NORM``, ``DENSE_FEATURE``)."""
    o = cfg.MODEL.OVDENSE
    if input_shape.channels not in (None, 3):
        raise ValueError(f"The CLIP tower takes RGB images, got {input_shape.channels} channels.")
    return OVDenseCLIPBackbone(
        load_clip_from_cfg(cfg),
        strategy=o.STRATEGY,
        out_indices=tuple(o.OUT_INDICES) or None,
        scales=tuple(o.SCALES),
        out_channels=o.PYRAMID_CHANNELS,
        norm=o.PYRAMID_NORM,
        dense_feature=o.DENSE_FEATURE or None,
    )
