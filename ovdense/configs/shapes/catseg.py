"""CAT-Seg's trained head on the shapes world: ``seg/catseg_vitb16.py`` with the bundled tiny CLIP,
the head sizes of ``train/catseg_shapes.py`` and the official evaluation geometry scaled by
64/384 (the tiny CLIP's input size over CAT-Seg's window): images at a short side of 107,
64-pixel windows 43 apart.

Needs the head trained by ``train/catseg_shapes.py`` (``model.checkpoint=...``); see README
"Shapes world" for its numbers next to the training-free strategies.
"""

from ..seg.catseg_vitb16 import model
from ..train.catseg_shapes import HEAD
from .base import L, load_clip

model.clip = L(load_clip)(model_name="ovdense-tiny-vit", pretrained="shapes")
model.templates = "shapes"
model.head_kwargs = {**HEAD, "class_chunk": 32}
model.short_side = 107  # 640 * 64 / 384
model.window = 64  # 384 * 64 / 384
model.stride = 43  # 256 * 64 / 384
model.max_long_side = 512
# the evaluation the README's shapes-world row was measured with (ovdense's older geometry)
model.fixed_size = None
model.global_view = False
model.decode_order = "ovdense"
model.window_batch_size = 4
