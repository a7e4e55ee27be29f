"""ResCLIP (Yang et al., CVPR 2025) on NACLIP, CLIP ViT-B/16: residual cross-correlation attention
(blocks 6-9, τ 2.0, λ 0.4) and semantic feedback refinement (τ 1.8, λ 0.7, threshold 0.25, PAMR
10 x (8, 16) on the feedback map), NACLIP's k-k attention with a Gaussian window (std 5), reduced
last block, short side 336, 224/112 windows, logit scale 40, no final PAMR."""

from .base_training_free import model

model.strategy = "resclip"
model.strategy_kwargs = {
    "base": "naclip",
    "base_kwargs": {"std": 5.0},
    "rcs": True,
    "rcs_layers": (5, 6, 7, 8),
    "rcs_weights": (2.0, 0.4),
    "sfr": True,
    "sfr_weights": (1.8, 0.7),
    "temp_thd": 0.25,
    "logit_scale": 40.0,
    "sfr_std": 5.0,
    "delete_same_entity": True,
    "pamr_iters": 10,
    "pamr_dilations": (8, 16),
}
model.pos_interp = "scale_factor"
model.short_side = 336
model.window = 224
model.stride = 112
model.logit_scale = 40.0
model.pamr = None
