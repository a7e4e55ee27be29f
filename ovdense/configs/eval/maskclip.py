"""MaskCLIP as CLIP-DINOiser evaluates it (docs/protocols.md#per-method-settings): short side 448,
448/224 windows, softmax(100 cos); ovdense's unified class-name rule."""

from ..seg.maskclip_vitb16 import model  # noqa: F401 - the config this file extends

class_rule = "unified"
benchmarks = {}
