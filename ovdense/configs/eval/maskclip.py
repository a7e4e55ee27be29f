"""MaskCLIP as CLIP-DINOiser evaluates it (docs/protocols.md#per-method-settings): short side 448,
448/224 windows, softmax(100 cos); ovdense's unified class-name rule."""

from ..seg.maskclip_vitb16 import model  # noqa: F401 - the config this file extends
from .unified import suite  # noqa: F401 - the benchmarks eval-all runs

method = "maskclip"
class_rule = "unified"
benchmarks = {}

#: mIoU (%) published with the method's own settings, CLIP ViT-B/16, per benchmark of
#: ``suite`` (docs/results.md#training-free-ovss); ``ovdense eval-all`` prints them under
#: its own row in the paper protocol.
published = {
    "voc20": 61.8,
    "context59": 25.5,
    "coco_stuff171": 17.5,
    "cityscapes": 25.0,
    "ade20k_150": 14.2,
}
published_source = "re-run by a third party, not the authors"
