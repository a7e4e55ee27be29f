"""CAT-Seg on CLIP ViT-L/14-336: as ``seg/catseg_vitb16`` with the official geometry scaled by
336/384 (images at 560, 336-pixel windows 224 apart: the 24 x 24 grid of the official 384
windows resized to 336). Needs the checkpoint of ``train/catseg_vitl14``
(``model.checkpoint=...``)."""

from ovdense.config import LazyCall as L
from ovdense.modeling.clip import load_clip

from .catseg_vitb16 import model

model.clip = L(load_clip)(model_name="ViT-L-14-336", pretrained="openai")
model.short_side = 560
model.window = 336
model.stride = 224
