"""maskclip on the shapes world: ``seg/maskclip_vitb16.py`` with the tiny CLIP (see base.py)."""

from ..seg.maskclip_vitb16 import model
from .base import to_shapes

model = to_shapes(model)
