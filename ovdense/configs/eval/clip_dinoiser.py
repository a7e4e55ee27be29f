"""CLIP-DINOiser's evaluation settings (Wysoczańska et al., ECCV 2024; docs/methods.md,
docs/protocols.md#per-method-settings): short side 448, 448/224 sliding windows, softmax(100 cos), γ
0.2, ovdense's unified class-name rule (see
docs/protocols.md#where-ovdense-differs-from-the-papers).

Background rule (max class probability < δ 0.99 and FOUND-like saliency < 0.5 -> class 0):
applied where the benchmark's class 0 is an "everything that is not an object" background,
i.e. VOC21 and COCO-Object, as the paper does. Their class 0 is given by several names under
the unified rule (sky, wall, ...), hence ``"force"`` (apply to class 0 whatever its names).
Pascal Context 60's class 0 is also named "background", but there stuff (sky, grass, road, ...)
has its own classes, so "not salient" does not mean "background": the rule is off. Benchmarks
without a background class (VOC20, Context59, COCO-Stuff, Cityscapes, ADE20K) never use it.

Decoding order: the official one (``decode_order="paper"``: softmax and background rule per
window at feature resolution, probabilities upsampled and averaged; docs/
clip_dinoiser_protocol.md), pinned here whatever the preset's default.
"""

from ..seg.clip_dinoiser_vitb16 import model  # the config this file extends
from .unified import suite  # noqa: F401 - the benchmarks eval-all runs

model.decode_order = "paper"

method = "clip_dinoiser"
class_rule = "unified"
benchmarks = {
    "voc21": {"background_rule": "force"},
    "coco_object": {"background_rule": "force"},
    "context60": {"background_rule": False},
}
