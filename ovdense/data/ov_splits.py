"""Open-vocabulary detection splits: which classes a detector may train on (base) and which
are only evaluated (novel).

OV-COCO (48 base / 17 novel of the 65 COCO classes with annotations in the zero-shot split of
Bansal et al., 2018, as used by OVR-CNN, ViLD, F-ViT / CLIPSelf): the lists are those of the
CLIPSelf repository (``F-ViT/datasets/mscoco_{seen,unseen}_classes.json``, also in
``shared/data/ov_splits/``), in their order, with COCO 2017 category names.

OV-LVIS (LVIS v1: 1203 categories; the 337 *rare* ones, frequency ``"r"`` = in fewer than 10
training images, are novel, the 461 common + 405 frequent ones base), as F-ViT / CLIPSelf (and
ViLD, Detic) set it: the rare categories' annotations are removed from the training JSON
(``lvis_v1_train_seen_1203_cat.json``: all 1203 categories kept, their annotations gone), the
rare logits are masked out of the training loss (F-ViT's class weights from
``lvis_v1_train_cat_norare_info.json``: weight 0 where ``image_count`` is 0, i.e. the rare
classes), and evaluation is on all 1203 of ``lvis_v1_val.json`` with APr / APc / APf over the
frequency groups of the categories' ``frequency`` field. The names (id order) and the rare list
are ``ovdense/data/classnames/lvis_v1.txt`` and ``lvis_v1_rare.txt`` (F-ViT's
``lvis_v1_{all,unseen}_classes.json``; its ``lvis_v1_seen_classes.json`` is the rest, in id
order).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "COCO_OV_BASE",
    "COCO_OV_NOVEL",
    "LVIS_FREQUENCIES",
    "coco_ov_classes",
    "lvis_frequency_groups",
    "lvis_ov_split",
    "lvis_v1_classes",
    "check_no_novel_targets",
    "remove_rare_annotations",
    "write_lvis_ov_train",
]

_CLASSNAMES = Path(__file__).parent / "classnames"

#: LVIS's frequency groups, in the order of APr / APc / APf.
LVIS_FREQUENCIES: tuple[str, ...] = ("r", "c", "f")

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


def _lines(name: str) -> tuple[str, ...]:
    text = (_CLASSNAMES / name).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@lru_cache(maxsize=1)
def _lvis_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    return _lines("lvis_v1.txt"), _lines("lvis_v1_rare.txt")


def lvis_v1_classes() -> list[str]:
    """The 1203 LVIS v1 category names in category-id order (``aerosol_can`` ... ``zucchini``)."""
    return list(_lvis_names()[0])


def lvis_ov_split() -> tuple[list[str], list[str]]:
    """OV-LVIS ``(base, novel)``: the 866 common + frequent categories and the 337 rare ones,
    both in category-id order (F-ViT's ``lvis_v1_seen_classes.json`` /
    ``lvis_v1_unseen_classes.json``)."""
    names, rare = _lvis_names()
    novel = set(rare)
    return [n for n in names if n not in novel], [n for n in names if n in novel]


def lvis_frequency_groups(categories: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """``{"r": [...], "c": [...], "f": [...]}`` category names by the ``frequency`` field of an
    LVIS JSON's categories (id order within a group).

    Raises:
        ValueError: a category without a ``frequency`` of ``r`` / ``c`` / ``f`` (not an LVIS
            file: APr / APc / APf are undefined for it).
    """
    groups: dict[str, list[str]] = {f: [] for f in LVIS_FREQUENCIES}
    for c in sorted(categories, key=lambda c: int(c["id"])):
        f = c.get("frequency")
        if f not in groups:
            raise ValueError(
                f"Category {c.get('name')!r} (id {c.get('id')}) has frequency {f!r}; LVIS "
                "categories carry 'r', 'c' or 'f' (is this an LVIS v1 annotation file?)."
            )
        groups[str(f)].append(str(c["name"]))
    return groups


def remove_rare_annotations(data: Mapping[str, Any]) -> dict[str, Any]:
    """The OV-LVIS training set from ``lvis_v1_train.json``'s content: every annotation of a
    rare category (``frequency == "r"``) removed; images and all 1203 categories kept (F-ViT's
    ``lvis_v1_train_seen_1203_cat.json``). The input is not modified."""
    rare = {int(c["id"]) for c in data["categories"] if c.get("frequency") == "r"}
    if not rare:
        raise ValueError(
            "No category has frequency 'r': this is not LVIS v1 annotation data, or its rare "
            "categories were already removed."
        )
    out = dict(data)
    out["annotations"] = [a for a in data["annotations"] if int(a["category_id"]) not in rare]
    return out


def write_lvis_ov_train(src: str | os.PathLike, dst: str | os.PathLike) -> tuple[int, int]:
    """Write :func:`remove_rare_annotations` of the JSON ``src`` to ``dst`` (written to a
    temporary file, then renamed). Returns ``(annotations kept, annotations removed)``."""
    from ..utils.io import atomic_write_text

    data = json.loads(Path(src).read_text(encoding="utf-8"))
    out = remove_rare_annotations(data)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(dst), json.dumps(out))
    kept = len(out["annotations"])
    return kept, len(data["annotations"]) - kept


def check_no_novel_targets(classes: Sequence[str], novel: Iterable[str]) -> None:
    """Refuse a training vocabulary that holds a novel class (OV-COCO's 17, OV-LVIS's rare).

    Raises:
        ValueError: naming the novel classes found.
    """
    bad = sorted(set(classes) & set(novel))
    if bad:
        raise ValueError(
            f"The training vocabulary holds {len(bad)} novel classes ({bad[:10]}"
            f"{' ...' if len(bad) > 10 else ''}); an open-vocabulary detector never trains on "
            "them: use the base classes (ov_splits.COCO_OV_BASE, lvis_ov_split()[0])."
        )
