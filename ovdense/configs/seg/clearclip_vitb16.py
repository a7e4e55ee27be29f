"""ClearCLIP (Lan et al., ECCV 2024) on CLIP ViT-B/16: q-q attention without residual and FFN,
short side 448, 448/224 windows, logit scale 50, fp16 on GPU (``precision="auto"``: fp32 on
CPU)."""

from .base_training_free import model

model.strategy = "clearclip"
model.pos_interp = "scale_factor"
model.short_side = 448
model.window = 448
model.stride = 224
model.logit_scale = 50.0
model.precision = "auto"
