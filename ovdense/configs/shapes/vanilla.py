"""Plain CLIP (the ``vanilla`` last block, no dense fix) on the shapes world: the baseline of
the dense strategies, with the shared training-free settings (336 short side, 224/112 windows,
logit scale 40 on ViT-B/16, scaled by base.py)."""

from ..seg.base_training_free import model
from .base import to_shapes

model = to_shapes(model)
