"""ProxyCLIP on CLIP ViT-B/16 with the SAM ViT-B image encoder as the proxy (neck features, each
window resized to 1024 on the long side: a 336 window gives a 64 x 64 map). Otherwise as
``proxyclip_vitb16``.

SAM weights are a local file that you must set, e.g.
``model.strategy_kwargs.vfm_kwargs.checkpoint=/path/sam_vit_b_01ec64.pth``
(download: https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth).
"""

from .proxyclip_vitb16 import model

model.strategy_kwargs.vfm = "sam_vit_b"
model.strategy_kwargs.vfm_kwargs = {"checkpoint": None}
