"""SCLIP (Wang et al., ECCV 2024) on CLIP ViT-B/16: correlative self-attention, short side 336,
224/112 windows, logit scale 40, SCLIP's scale_factor position interpolation. (Per-benchmark
settings such as VOC21's logit scale 65 and thresholds are in the benchmark presets.)"""

from .base_training_free import model

model.strategy = "sclip"
model.pos_interp = "scale_factor"
model.short_side = 336
model.window = 224
model.stride = 112
model.logit_scale = 40.0
