"""NACLIP (Hajimiri et al., WACV 2025) on CLIP ViT-B/16: k-k attention with a Gaussian
neighbourhood (std 5 patches), reduced last block, short side 336, 224/112 windows, logit scale
40, PAMR (10 iterations, dilations 8 and 16)."""

from ovdense.config import LazyCall as L
from ovdense.modeling.refiners import PAMR

from .base_training_free import model

model.strategy = "naclip"
model.strategy_kwargs = {"std": 5.0}
model.pos_interp = "scale_factor"
model.short_side = 336
model.window = 224
model.stride = 112
model.logit_scale = 40.0
model.pamr = L(PAMR)(num_iter=10, dilations=(8, 16))
