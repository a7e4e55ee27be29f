"""ProxyCLIP on CLIP ViT-B/16 with DINOv2 ViT-B/14 with registers as the proxy (last-layer
normalised patch tokens; a 336 window gives a 24 x 24 map). Otherwise as ``proxyclip_vitb16``.

Weights: timm ``vit_base_patch14_reg4_dinov2.lvd142m`` from the Hugging Face hub; offline, set
``model.strategy_kwargs.vfm_kwargs.checkpoint=/path/dinov2_vitb14_reg4_pretrain.pth``.
"""

from .proxyclip_vitb16 import model

model.strategy_kwargs.vfm = "dinov2_vitb14_reg"
