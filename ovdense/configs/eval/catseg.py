"""CAT-Seg's evaluation (Cho et al., CVPR 2024; docs/methods.md#cat-seg): the trained head of
``seg/catseg_vitb16`` (``model.checkpoint=...``) zero-shot on the benchmarks of the paper, with
the official geometry of the preset (short side 640, 384/256 windows, logit scale 1).

``ovdense eval-all --config catseg model.checkpoint=output/catseg_vitb16/model_0080000.pt``
runs the suite below and prints the published numbers under ours.
"""

from ..seg.catseg_vitb16 import model  # noqa: F401 - the config this file extends

method = "catseg"
class_rule = "unified"
benchmarks: dict = {}

#: the zero-shot benchmarks of trained OVSS heads (trained on COCO-Stuff), in the paper's order
suite = {
    "ade20k_847": "A-847",
    "context459": "PC-459",
    "ade20k_150": "A-150",
    "context59": "PC-59",
    "voc20": "VOC-20",
}

#: mIoU (%) of the official ViT-B/16 model (the repository's README; ViT-L/14: 16.0, 23.8,
#: 37.9, 63.3, 97.0). PC-459 depends on how classes absent from both ground truth and
#: prediction are counted; ovdense leaves them out.
published = {
    "ade20k_847": 12.0,
    "context459": 19.0,
    "ade20k_150": 31.8,
    "context59": 57.5,
    "voc20": 94.6,
}
published_source = "CAT-Seg repository README (ViT-B/16)"
