"""CAT-Seg on CLIP ViT-L/14-336: as ``seg/catseg_vitb16`` (the official evaluation: 640 x 640,
384-pixel windows 256 apart plus the whole image at 384), each crop resized to 336 before CLIP
as the official code does. The released ViT-L/14 ``model_final.pth`` loads by path
(``model.checkpoint=model_final_large.pth``), as does a checkpoint of ``train/catseg_vitl14``."""

from .catseg_vitb16 import model

model.clip_model = "ViT-L-14-336"
model.crop_resize = 336
