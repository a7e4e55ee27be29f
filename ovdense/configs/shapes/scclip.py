"""scclip on the shapes world: ``seg/scclip_vitb16.py`` with the tiny CLIP (see base.py).

The tiny CLIP has 6 blocks where ViT-B/16 has 12: each block index keeps its relative depth
(0-based 8 -> 4 for the input re-calibration, 3 -> 2 for the output aggregation, the fused
blocks 3..9 -> 2..4); the anomaly detector's 30 neighbours stay (an 8 x 8 grid has 64 patches).
"""

from ..seg.scclip_vitb16 import model
from .base import to_shapes

model = to_shapes(model)
model.strategy_kwargs.pre_adjust_idx = 4
model.strategy_kwargs.post_adjust_idx = 2
model.strategy_kwargs.multi_start_idx = 2
model.strategy_kwargs.multi_end_idx = 5
