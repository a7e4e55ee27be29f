"""resclip on the shapes world: ``seg/resclip_vitb16.py`` with the tiny CLIP (see base.py).

The tiny CLIP has 6 blocks where ViT-B/16 has 12: the residual cross-correlation blocks (the
6th to 9th of 12, 0-based 5..8) become the same depth range of 6, 0-based 2..4; the feedback
map's PAMR dilations (pixels of the window) are scaled like the other pixel sizes.
"""

from ..seg.resclip_vitb16 import model
from .base import SCALE, to_shapes

model = to_shapes(model)
model.strategy_kwargs.rcs_layers = (2, 3, 4)
model.strategy_kwargs.pamr_dilations = tuple(
    max(1, round(d * SCALE)) for d in model.strategy_kwargs.pamr_dilations
)
