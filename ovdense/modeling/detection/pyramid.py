"""A feature pyramid from a plain (single-scale) ViT: F-ViT's / ViTDet's simple pyramid."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

__all__ = ["SimpleFeaturePyramid"]

_SCALES = (4.0, 2.0, 1.0, 0.5)


def _resampler(channels: int, scale: float, norm: bool) -> nn.Module:
    if scale == 4.0:
        return nn.Sequential(
            nn.ConvTranspose2d(channels, channels, 2, stride=2),
            nn.BatchNorm2d(channels) if norm else nn.Identity(),
            nn.GELU(),
            nn.ConvTranspose2d(channels, channels, 2, stride=2),
        )
    if scale == 2.0:
        return nn.ConvTranspose2d(channels, channels, 2, stride=2)
    if scale == 1.0:
        return nn.Identity()
    if scale == 0.5:
        return nn.MaxPool2d(2, stride=2)
    raise ValueError(f"scales must be among {_SCALES}, got {scale}.")


class SimpleFeaturePyramid(nn.Module):
    """Four single-stride ViT maps -> strides ``p/4, p/2, p, 2p`` (+ ``4p``) -> an FPN.

    F-ViT's pyramid (``EvaCLIPViT`` + mmdet ``FPN`` in the CLIPSelf repository): the tokens of
    four blocks (ViT-B/16: blocks 3, 5, 7, 11, the last through the dense last block) are
    resampled by 4x (deconv, norm, GELU, deconv), 2x (deconv), 1x and 0.5x (max-pool) and fed
    to a feature pyramid network with a max-pooled extra level. Taking the same (last) block
    four times gives ViTDet's simple pyramid.

    Args:
        in_channels: ViT width ``C`` of the tapped tokens.
        out_channels: channels of every output level (F-ViT: 256).
        scales: resampling factor of each input (default ``(4, 2, 1, 0.5)``).
        norm: batch norm in the 4x branch and in the FPN convolutions (F-ViT: SyncBN).

    ``forward(maps)`` takes the ``[B, C, h, w]`` maps in the order of ``scales`` and returns an
    ``OrderedDict`` ``{"0": stride p/4, "1", "2", "3": stride 2p, "pool": stride 4p}`` of
    ``[B, out_channels, ., .]`` maps (torchvision's backbone contract; ``h, w`` must be even).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        scales: Sequence[float] = _SCALES,
        norm: bool = True,
    ) -> None:
        super().__init__()
        self.scales = tuple(float(s) for s in scales)
        self.resamplers = nn.ModuleList(_resampler(in_channels, s, norm) for s in self.scales)
        self.fpn = FeaturePyramidNetwork(
            [in_channels] * len(self.scales),
            out_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=nn.BatchNorm2d if norm else None,
        )
        self.out_channels = int(out_channels)

    def strides(self, patch_size: int) -> list[int]:
        """Output strides (input pixels per cell) of the levels, ``"pool"`` last."""
        out = [int(round(patch_size / s)) for s in self.scales]
        return [*out, out[-1] * 2]

    def forward(self, maps: Sequence[Tensor]) -> OrderedDict[str, Tensor]:
        if len(maps) != len(self.scales):
            raise ValueError(f"Expected {len(self.scales)} maps, got {len(maps)}.")
        levels = OrderedDict(
            (str(i), r(m)) for i, (r, m) in enumerate(zip(self.resamplers, maps, strict=True))
        )
        return self.fpn(levels)
