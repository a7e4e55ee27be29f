"""The Segment Anything (SAM) image encoder as a vision foundation model.

``sam_vit_b``, ``sam_vit_l``, ``sam_vit_h``: the image encoder of segment-anything (an optional
dependency: ``pip install segment-anything``) with the official checkpoint file; features are
its (neck) output, 256 channels.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
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
    "SAMLastAttention",
    "load_sam_image_encoder",
    "sam_image_encoder",
]

SAM_CHECKPOINTS = {
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
}


@dataclass
class SAMLastAttention:
    """The last block of a SAM image encoder, as Trident reads it (``last_attn``, ``last_v``).

    ``q, k, v`` are per head on SAM's whole padded input grid (``64 x 64`` at 1024 pixels);
    :meth:`weights` and :meth:`values` crop them to the cells that cover the image, ``grid``.

    Attributes:
        q, k, v: ``[B, heads, Hp * Wp, hd]`` from the last block's ``qkv`` of ``norm1(x)``.
        padded_grid: ``(Hp, Wp)``, SAM's whole token grid.
        grid: ``(gh, gw)``, the cells kept (top-left corner of the padded grid).
        scale: ``hd ** -0.5``.
        rel_pos_h, rel_pos_w: the block's decomposed relative position tables, or ``None``.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    padded_grid: tuple[int, int]
    grid: tuple[int, int]
    scale: float
    rel_pos_h: Tensor | None = None
    rel_pos_w: Tensor | None = None

    @property
    def num_heads(self) -> int:
        return int(self.q.shape[1])

    def weights(self, heads: slice | None = None) -> Tensor:
        """The attention probabilities of the heads ``heads`` (all by default), as SAM computes
        them over its whole padded grid (``softmax((q s) kᵀ + rel_pos)``), then rows and columns
        cropped to ``grid`` (not renormalised): ``[B, h, gh * gw, gh * gw]``."""
        from segment_anything.modeling.image_encoder import add_decomposed_rel_pos

        sl = slice(None) if heads is None else heads
        q, k = self.q[:, sl], self.k[:, sl]
        b, nh, p, hd = q.shape
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.rel_pos_h is not None and self.rel_pos_w is not None:
            attn = add_decomposed_rel_pos(
                attn.reshape(b * nh, p, p),
                q.reshape(b * nh, p, hd),
                self.rel_pos_h,
                self.rel_pos_w,
                self.padded_grid,
                self.padded_grid,
            )
        attn = attn.softmax(dim=-1)
        (hp, wp), (gh, gw) = self.padded_grid, self.grid
        attn = attn.view(b, nh, hp, wp, hp, wp)[:, :, :gh, :gw, :gh, :gw]
        return attn.reshape(b, nh, gh * gw, gh * gw)

    def values(self) -> Tensor:
        """``v`` cropped to ``grid``: ``[B, heads, gh * gw, hd]``."""
        b, nh, _, hd = self.v.shape
        (hp, wp), (gh, gw) = self.padded_grid, self.grid
        return self.v.view(b, nh, hp, wp, hd)[:, :, :gh, :gw].reshape(b, nh, gh * gw, hd)


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

    def prepare(self, images01: Tensor) -> Tensor:
        """SAM's input: ``[B, 3, H, W]`` in ``[0, 1]`` resized to ``input_size`` (bilinear,
        antialiased), normalised and zero-padded to ``img_size x img_size``."""
        self._check_images(images01)
        h, w = images01.shape[-2:]
        nh, nw = self.input_size(h, w)
        x = images01.to(self.dtype)
        if (nh, nw) != (h, w):
            x = F.interpolate(
                x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
            )
        return F.pad(self.normalize(x), (0, self.img_size - nw, 0, self.img_size - nh))

    def forward(self, images01: Tensor) -> Tensor:
        """Args:
            images01: ``[B, 3, H, W]`` RGB in ``[0, 1]``.

        Returns:
            ``[B, embed_dim, h, w]``, ``(h, w) = output_grid(H, W)`` (at most 64 x 64).
        """
        h, w = images01.shape[-2:]
        feats = self.image_encoder(self.prepare(images01))
        gh, gw = self.output_grid(h, w)
        return feats[:, :, :gh, :gw]

    def last_attention(self, images01: Tensor, rounding: str = "ceil") -> SAMLastAttention:
        """The last block's attention inputs (Trident reads SAM's last attention map and
        values): the encoder runs up to its last block, whose ``q, k, v`` are returned.

        Args:
            images01: ``[B, 3, H, W]`` RGB in ``[0, 1]``.
            rounding: the cells that cover the image: ``"ceil"`` (:meth:`output_grid`, the
                last row / column partly padding) or ``"floor"`` (only whole cells:
                ``input_size // patch_size``, Trident's ``sam_valid_h / w``).

        Raises:
            ValueError: the last block uses window attention (SAM's last block is global in
                every official size), or an unknown ``rounding``.
        """
        if rounding not in ("ceil", "floor"):
            raise ValueError(f"rounding must be 'ceil' or 'floor', got {rounding!r}.")
        enc = self.image_encoder
        last = enc.blocks[-1]
        if getattr(last, "window_size", 0):
            raise ValueError(
                "The last block of this SAM image encoder uses window attention; Trident's "
                "affinity needs a global last block (global_attn_indexes ending with depth - 1)."
            )
        x = enc.patch_embed(self.prepare(images01))
        if enc.pos_embed is not None:
            x = x + enc.pos_embed
        for blk in enc.blocks[:-1]:
            x = blk(x)
        b, hp, wp, _ = x.shape
        attn = last.attn
        qkv = attn.qkv(last.norm1(x)).reshape(b, hp * wp, 3, attn.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, heads, Hp * Wp, hd] each
        h, w = images01.shape[-2:]
        if rounding == "ceil":
            grid = self.output_grid(h, w)
        else:
            nh, nw = self.input_size(h, w)
            grid = (nh // self.patch_size, nw // self.patch_size)
        use_rel = bool(getattr(attn, "use_rel_pos", False))
        return SAMLastAttention(
            q=q,
            k=k,
            v=v,
            padded_grid=(hp, wp),
            grid=(int(grid[0]), int(grid[1])),
            scale=float(attn.scale),
            rel_pos_h=attn.rel_pos_h if use_rel else None,
            rel_pos_w=attn.rel_pos_w if use_rel else None,
        )

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
