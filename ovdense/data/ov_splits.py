"""Open-vocabulary detection splits: which classes a detector may train on (base) and which
are only evaluated (novel).

OV-COCO (48 base / 17 novel of the 65 COCO classes with annotations in the zero-shot split of
Bansal et al., 2018, as used by OVR-CNN, ViLD, F-ViT / CLIPSelf): the lists are those of the
CLIPSelf repository (``F-ViT/datasets/mscoco_{seen,unseen}_classes.json``, also in
``shared/data/ov_splits/``), in their order, with COCO 2017 category names.
"""

from __future__ import annotations

__all__ = ["COCO_OV_BASE", "COCO_OV_NOVEL", "coco_ov_classes"]

COCO_OV_BASE: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "train",
    "truck",
    "boat",
    "bench",
    "bird",
    "horse",
    "sheep",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "handbag",
    "suitcase",
    "frisbee",
    "skis",
    "kite",
    "surfboard",
    "bottle",
    "fork",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "pizza",
    "donut",
    "chair",
    "bed",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "microwave",
    "oven",
    "toaster",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "toothbrush",
)
COCO_OV_NOVEL: tuple[str, ...] = (
    "airplane",
    "bus",
    "cat",
    "dog",
    "cow",
    "elephant",
    "umbrella",
    "tie",
    "snowboard",
    "skateboard",
    "cup",
    "knife",
    "cake",
    "couch",
    "keyboard",
    "sink",
    "scissors",
)


def coco_ov_classes() -> list[str]:
    """The 65 OV-COCO classes, base first then novel (the evaluation vocabulary)."""
    return [*COCO_OV_BASE, *COCO_OV_NOVEL]
