"""Vision foundation models (VFMs): frozen DINO / DINOv2 / SAM image encoders as patch features.

They provide the affinities that guide dense CLIP (ProxyCLIP's proxy attention, CLIP-DINOiser's
teacher, Trident's global aggregation). Every wrapper has one contract,
:class:`VisionFoundationModel` (``base.py``):

- ``forward(images01)`` takes RGB images in ``[0, 1]`` (``[B, 3, H, W]``, any ``H, W >= 1``),
  normalises them with the model's own ``mean``/``std`` and returns patch features
  ``[B, embed_dim, h, w]`` on the model's own grid;
- ``output_grid(H, W)`` tells that grid in advance.

One file per family, each registering its builders in :data:`VFMS` (``registry.py``, with
:func:`build_vfm` and :func:`list_vfms`):

- ``timm_vit.py``: ``dino_vits16``, ``dino_vits8``, ``dino_vitb16``, ``dino_vitb8`` (DINO,
  last-block keys) and ``dinov2_vitb14_reg`` (DINOv2 with registers, normalised tokens), through
  timm;
- ``sam.py``: ``sam_vit_b``, ``sam_vit_l``, ``sam_vit_h``, the SAM image encoder (neck output,
  256 channels) from segment-anything and the official checkpoint file.

Weights are loaded the real way (timm ``pretrained=True`` from the Hugging Face hub, or
``checkpoint=`` a local file read with ``weights_only=True``). ``pretrained=False`` keeps random
weights; with size arguments (timm ``img_size``/``embed_dim``/``depth``/``num_heads``, SAM's
``ImageEncoderViT`` arguments) it builds tiny models offline (tests). Existing modules can be
wrapped (``DINOFeatures(model=...)``, ``SAMFeatures(image_encoder=...)``).
"""

from .base import IMAGENET_MEAN, IMAGENET_STD, VisionFoundationModel
from .registry import VFMS, build_vfm, list_vfms
from .sam import SAM_CHECKPOINTS, SAMFeatures, load_sam_image_encoder, sam_image_encoder
from .timm_vit import (
    DINOFeatures,
    DINOv2Features,
    LastBlockOutputs,
    TimmViTFeatures,
    load_timm_vit,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SAM_CHECKPOINTS",
    "VFMS",
    "DINOFeatures",
    "DINOv2Features",
    "LastBlockOutputs",
    "SAMFeatures",
    "TimmViTFeatures",
    "VisionFoundationModel",
    "build_vfm",
    "list_vfms",
    "load_sam_image_encoder",
    "load_timm_vit",
    "sam_image_encoder",
]
