"""Dataset converters: the official archives of a benchmark -> the layout ovdense reads.

One module per dataset, each with plain functions (``prepare_*``) and a command line
(``main(argv)``), sharing :mod:`ovdense.data.prepare`. Run them as
``ovdense prepare <name> ...``, ``python -m ovdense.data.converters.<name> ...`` or (from a
checkout) ``python tools/prepare_<name>.py ...``; ``datasets/README.md`` says which archive
each one reads.
"""

from __future__ import annotations

__all__ = ["CONVERTERS"]

#: ``ovdense prepare <name>`` -> (module, what it writes). Modules are imported on use.
CONVERTERS: dict[str, tuple[str, str]] = {
    "coco": (
        "ovdense.data.converters.coco",
        "coco_stuff171 (stuff) and coco_object (object) labels from COCO / COCO-Stuff val2017",
    ),
    "pascal_context": (
        "ovdense.data.converters.pascal_context",
        "context60/59 and context459 labels from the PASCAL-Context .mat annotations",
    ),
    "cityscapes": (
        "ovdense.data.converters.cityscapes",
        "Cityscapes gtFine labelTrainIds from the official labelIds",
    ),
    "ade20k_847": (
        "ovdense.data.converters.ade20k_847",
        "ADE20K-847 (CAT-Seg's layout) from the full ADE20K release",
    ),
}
