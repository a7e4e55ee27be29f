"""ProxyCLIP (Lan et al., ECCV 2024) on CLIP ViT-B/16 with DINO ViT-B/8 as the proxy: the last
block attends with the VFM's feature affinities (β 1.2, γ 3.0; DINO's last-block output tokens
after its final norm, as the official code), reduced block, dense map on the VFM grid; short
side 336, 336/112 windows, logit scale 40, CLIP position embeddings interpolated with
ProxyCLIP's scale_factor rule. The official code runs CLIP and the VFM in fp16 on GPU
(``precision="auto"``: fp16 on GPU, fp32 on CPU).

DINO weights come from the Hugging Face hub (timm ``vit_base_patch8_224.dino``); offline, set
``model.strategy_kwargs.vfm_kwargs.checkpoint=/path/dino_vitbase8_pretrain.pth`` (the official
DINO file, or timm's). Variants: ``proxyclip_vitb16_dinov2`` and ``proxyclip_vitb16_sam``.
"""

from .base_training_free import model

model.strategy = "proxy"
model.strategy_kwargs = {
    "vfm": "dino_vitb8",
    "beta": 1.2,
    "gamma": 3.0,
    # the official code's DINO features: get_intermediate_layers(x)[0], i.e. the last block's
    # output after the final norm (patch tokens), not the keys (docs/parity_mmseg.md)
    "vfm_kwargs": {"checkpoint": None, "feature": "tokens"},
}
model.pos_interp = "scale_factor"
model.short_side = 336
model.window = 336
model.stride = 112
model.logit_scale = 40.0
model.precision = "auto"
