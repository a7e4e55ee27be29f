"""Shared part of the shapes-world presets (not a preset itself): a test/demo asset.

Each ``shapes/<method>.py`` is the method's own preset (``seg/<method>_vitb16.py``) with the
bundled tiny CLIP (``load_clip("ovdense-tiny-vit", "shapes")``, 64 px input), the caption
templates of the shapes world, and every size in pixels (short side, windows, stride, PAMR
dilations) scaled by 64 / 224, the ratio of the tiny CLIP's input size to ViT-B/16's: a 336
short side with 224/112 windows becomes 96 with 64/32.
"""

from ovdense.config import LazyCall as L
from ovdense.modeling.clip import load_clip

SCALE = 64 / 224


def to_shapes(model):
    """Put the tiny shapes CLIP into a segmentor preset and scale its pixel sizes."""
    model.clip = L(load_clip)(model_name="ovdense-tiny-vit", pretrained="shapes")
    model.templates = "shapes"
    for key in ("short_side", "window", "stride"):
        model[key] = round(model[key] * SCALE)
    model.max_long_side = 512
    if model.get("pamr") is not None:
        model.pamr.dilations = tuple(max(1, round(d * SCALE)) for d in model.pamr.dilations)
    return model
