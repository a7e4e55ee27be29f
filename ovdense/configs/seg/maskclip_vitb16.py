"""MaskCLIP (Zhou et al., ECCV 2022) on CLIP ViT-B/16, with the settings CLIP-DINOiser uses to
evaluate it: short side 448, 448/224 windows, position embeddings interpolated to the target
size, softmax(100 * cos)."""

from .base_training_free import model

model.strategy = "maskclip"
model.pos_interp = "size"
model.short_side = 448
model.window = 448
model.stride = 224
model.logit_scale = 100.0
