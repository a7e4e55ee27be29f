"""The two OVSS benchmarks mmseg 1.x has no dataset class for, in ovdense's layouts
(docs/protocols.md#benchmarks; the SCLIP-family repositories define them the same way).

- ``OVDensePascalVOC20Dataset``: VOC 2012 val without the background class (label 0 not
  scored, ``reduce_zero_label``), 20 classes.
- ``OVDenseCOCOObjectDataset``: COCO 2017 val, the 80 thing classes plus background from the
  ``*_instanceTrainIds.png`` maps (``ovdense prepare coco`` writes them).
"""

from __future__ import annotations

from typing import Any

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from ...data.catalog import get_metadata

__all__ = ["OVDenseCOCOObjectDataset", "OVDensePascalVOC20Dataset"]


def _classes(benchmark: str) -> tuple[str, ...]:
    # one display name per class: the first name under the unified rule, "background" for the
    # background class (its line lists background words)
    meta = get_metadata(benchmark)
    names = meta.class_names("unified")
    return tuple("background" if i == meta.background_index else n[0] for i, n in enumerate(names))


def _palette(n: int) -> list[list[int]]:
    return [[(37 * i) % 256, (91 * i + 40) % 256, (173 * i + 80) % 256] for i in range(n)]


@DATASETS.register_module()
class OVDensePascalVOC20Dataset(BaseSegDataset):
    METAINFO = dict(classes=_classes("voc20"), palette=_palette(20))

    def __init__(self, ann_file: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("reduce_zero_label", True)
        super().__init__(img_suffix=".jpg", seg_map_suffix=".png", ann_file=ann_file, **kwargs)


@DATASETS.register_module()
class OVDenseCOCOObjectDataset(BaseSegDataset):
    METAINFO = dict(classes=_classes("coco_object"), palette=_palette(81))

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("reduce_zero_label", False)
        super().__init__(img_suffix=".jpg", seg_map_suffix="_instanceTrainIds.png", **kwargs)
