"""ovdense's unified protocol: one setting for every method, so their numbers compare.

Applied on top of a method preset (its strategy, strategy arguments and position interpolation
are kept; everything else is replaced): short side 336 (Cityscapes 560), 224/112 sliding
windows, logit scale 40, the 80 OpenAI templates, class names split on ", " and "; " with
synonyms max-pooled (background classes get all their names), no threshold, no PAMR, fp32.

``suite``: the benchmarks ``ovdense eval-all`` runs and averages (catalog name -> table column,
in table order), the eight standard OVSS ones; every method's evaluation preset imports it
(``from .unified import suite``) or declares its own.
"""

suite = {
    "voc21": "VOC21",
    "context60": "PC60",
    "coco_object": "Object",
    "voc20": "VOC20",
    "context59": "PC59",
    "coco_stuff171": "Stuff",
    "cityscapes": "City",
    "ade20k_150": "ADE",
}

class_rule = "unified"
protocol = {
    "templates": "openai_imagenet",
    "short_side": 336,
    "max_long_side": 2048,
    "window": 224,
    "stride": 112,
    "logit_scale": 40.0,
    "prob_thd": 0.0,
    "area_thd": None,
    "pamr": None,
    "precision": "fp32",
}
benchmarks = {
    "cityscapes": {"short_side": 560},
}
