"""The Segment Anything (SAM) image encoder as a vision foundation model.

``sam_vit_b``, ``sam_vit_l``, ``sam_vit_h``: the image encoder of segment-anything (an optional
dependency: ``pip install segment-anything``) with the official checkpoint file; features are
its (neck) output, 256 channels.
"""

from __future__ import annotations

import math
import os
from functools import partial
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .base import IMAGENET_MEAN, IMAGENET_STD, VisionFoundationModel, check_file, read_state_dict
from .registry import VFMS

__all__ = [
    "SAM_CHECKPOINTS",
    "SAM_ENCODERS",
    "SAMFeatures",
    "load_sam_image_encoder",
    "sam_image_encoder",
]

SAM_CHECKPOINTS = {
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
}


class SAMFeatures(VisionFoundationModel):
    """Segment Anything (Kirillov et al., 2023) image encoder: its output (neck) features.

    SAM runs at a fixed square input (1024). As ``SamPredictor`` does, the image is resized
    (bilinear, antialiased) so that its long side is ``img_size`` (the short side rounded
    half up), normalised, zero-padded at the bottom and right to ``img_size x img_size``; the
    feature map is then cropped back to the cells that cover the image:
    ``(ceil(H' / p), ceil(W' / p))`` with ``H', W'`` the resized size (64 x 64 for a square).

    Args:
        image_encoder: a ``segment_anything.modeling.ImageEncoderViT`` (``sam.image_encoder``).
        mean, std: normalisation (default SAM's: ImageNet statistics).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        proj = getattr(getattr(image_encoder, "patch_embed", None), "proj", None)
        if not isinstance(proj, nn.Conv2d) or not hasattr(image_encoder, "img_size"):
            raise TypeError(
                "SAMFeatures needs a segment_anything ImageEncoderViT (sam.image_encoder), got "
                f"{type(image_encoder).__name__}."
            )
        encoder: Any = image_encoder  # segment_anything's ImageEncoderViT (untyped)
        self.image_encoder = encoder
        self.img_size = int(encoder.img_size)
        self.patch_size = int(proj.stride[0])
        neck = getattr(image_encoder, "neck", None)
        out = [m for m in (neck or []) if isinstance(m, nn.Conv2d)]
        self.embed_dim = int(out[-1].out_channels if out else proj.out_channels)
        self.mean = tuple(mean)  # type: ignore[assignment]
        self.std = tuple(std)  # type: ignore[assignment]

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Size after the long-side resize (``ResizeLongestSide.get_preprocess_shape``)."""
        scale = self.img_size / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)

    def output_grid(self, height: int, width: int) -> tuple[int, int]:
        nh, nw = self.input_size(height, width)
        p = self.patch_size
        return math.ceil(nh / p), math.ceil(nw / p)

    def forward(self, images01: Tensor) -> Tensor:
        """Args:
            images01: ``[B, 3, H, W]`` RGB in ``[0, 1]``.

        Returns:
            ``[B, embed_dim, h, w]``, ``(h, w) = output_grid(H, W)`` (at most 64 x 64).
        """
        self._check_images(images01)
        h, w = images01.shape[-2:]
        nh, nw = self.input_size(h, w)
        x = images01.to(self.dtype)
        if (nh, nw) != (h, w):
            x = F.interpolate(
                x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
            )
        x = F.pad(self.normalize(x), (0, self.img_size - nw, 0, self.img_size - nh))
        feats = self.image_encoder(x)
        gh, gw = self.output_grid(h, w)
        return feats[:, :, :gh, :gw]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, img_size={self.img_size}"


# the image encoder of each SAM size, as segment_anything's build_sam.py builds it
SAM_ENCODERS: dict[str, dict[str, Any]] = {
    "vit_b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11)},
    "vit_l": {
        "embed_dim": 1024,
        "depth": 24,
        "num_heads": 16,
        "global_attn_indexes": (5, 11, 17, 23),
    },
    "vit_h": {
        "embed_dim": 1280,
        "depth": 32,
        "num_heads": 16,
        "global_attn_indexes": (7, 15, 23, 31),
    },
}


def sam_image_encoder(kind: str, **overrides: Any) -> nn.Module:
    """A randomly initialised SAM image encoder (``segment_anything``'s ``ImageEncoderViT``) of
    size ``kind`` (``"vit_b"``, ``"vit_l"``, ``"vit_h"``), built as ``sam_model_registry[kind]``
    builds it; ``overrides`` replace ``ImageEncoderViT`` arguments (e.g. ``img_size``,
    ``depth``, ``embed_dim`` for tiny test models)."""
    try:
        from segment_anything.modeling import ImageEncoderViT
    except ImportError:
        raise ImportError(
            "SAM features need segment-anything: pip install segment-anything"
        ) from None
    if kind not in SAM_ENCODERS:
        raise ValueError(f"SAM kind must be one of {tuple(SAM_ENCODERS)}, got {kind!r}.")
    args: dict[str, Any] = {
        "img_size": 1024,
        "patch_size": 16,
        "mlp_ratio": 4,
        "norm_layer": partial(nn.LayerNorm, eps=1e-6),
        "qkv_bias": True,
        "use_rel_pos": True,
        "window_size": 14,
        "out_chans": 256,
        **SAM_ENCODERS[kind],
    }
    args.update(overrides)
    return ImageEncoderViT(**args).eval()


def load_sam_image_encoder(
    kind: str,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = True,
    **encoder_kwargs: Any,
) -> nn.Module:
    """The SAM image encoder of size ``kind`` (:func:`sam_image_encoder`), its weights read from
    ``checkpoint`` (the official SAM file, or a state dict of the encoder alone) with
    ``weights_only=True``. ``pretrained=False`` without a checkpoint gives random weights;
    ``encoder_kwargs`` change the architecture (tiny test models)."""
    url = SAM_CHECKPOINTS[kind]
    if checkpoint is None:
        if pretrained:
            raise ValueError(
                f"SAM {kind} weights come from a local file: pass checkpoint='/path/"
                f"{os.path.basename(url)}' (download: {url}; config: "
                f"model.strategy_kwargs.vfm_kwargs.checkpoint=/path/{os.path.basename(url)})."
            )
        return sam_image_encoder(kind, **encoder_kwargs)
    path = check_file(checkpoint, f"SAM {kind}", url)
    encoder = sam_image_encoder(kind, **encoder_kwargs)
    state = read_state_dict(path)
    if any(k.startswith("image_encoder.") for k in state):
        state = {k[14:]: v for k, v in state.items() if k.startswith("image_encoder.")}
    try:
        encoder.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise RuntimeError(
            f"Could not load {path} into the SAM {kind} image encoder ({detail}); is it the "
            f"{kind} file ({url})?"
        ) from None
    return encoder


def _register_sam(name: str, kind: str) -> None:
    def build(
        checkpoint: str | os.PathLike | None = None,
        pretrained: bool = True,
        **encoder_kwargs: Any,
    ) -> VisionFoundationModel:
        return SAMFeatures(load_sam_image_encoder(kind, checkpoint, pretrained, **encoder_kwargs))

    build.__name__ = f"build_{name}"
    build.__doc__ = (
        f"``SAMFeatures`` of SAM {kind} (``checkpoint`` = {SAM_CHECKPOINTS[kind]}); extra keyword "
        "arguments go to ``ImageEncoderViT``."
    )
    VFMS.register(name)(build)


for _kind in SAM_ENCODERS:
    _register_sam(f"sam_{_kind}", _kind)
