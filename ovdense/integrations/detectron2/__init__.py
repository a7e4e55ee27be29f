"""ovdense inside detectron2: its registries, catalogs, evaluators and LazyConfigs.

Importing this package registers, in detectron2's registries:

- ``BACKBONE_REGISTRY``: ``build_ovdense_clip_backbone`` (yacs) for :class:`OVDenseCLIPBackbone`,
  the frozen dense CLIP ViT + F-ViT's simple feature pyramid, with ``output_shape()``;
- ``ROI_HEADS_REGISTRY``: :class:`OVDenseROIHeads`, ``StandardROIHeads`` whose box predictor
  is :class:`TextFastRCNNOutputLayers` (cosine with text embeddings x a learnable temperature,
  a learned background, class-agnostic boxes) and F-ViT's test-time CLIP ensemble;
- ``SEM_SEG_HEADS_REGISTRY``: :class:`OVDenseSemSegHead`, ovdense's segmentation heads
  (``SEG_HEADS``) on the dense CLIP map;
- ``DatasetCatalog`` / ``MetadataCatalog``: the shapes world's and OV-COCO's detection sets
  (:data:`~ovdense.integrations.detectron2.datasets.BUILTIN_DATASETS`), with their base /
  novel classes;

and provides :class:`OVDenseDetectionEvaluator` (ovdense's COCO evaluator as a
``DatasetEvaluator``), :func:`add_ovdense_config` (yacs keys) and LazyConfigs under
:data:`CONFIGS_DIR` trained by detectron2's own trainer (:mod:`.train_net`,
``tools/d2_train.py``). The rest of ovdense never imports this package.
"""

from __future__ import annotations

try:
    import detectron2  # noqa: F401
    import detectron2.modeling  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without detectron2
    raise ImportError(
        "ovdense.integrations.detectron2 needs detectron2, which has no PyPI wheel: see "
        "README.md#detectron2-adapter (install it from source, or the wheel built for this "
        f"Python and torch). ({err})"
    ) from err

from .backbone import OVDenseCLIPBackbone, build_ovdense_clip_backbone, clip_pixel_stats
from .config import add_ovdense_config
from .datasets import (
    BUILTIN_DATASETS,
    coco_detection_dicts,
    register_ov_coco_instances,
    register_ovdense_datasets,
)
from .evaluation import OVDenseDetectionEvaluator
from .roi_heads import OVDenseROIHeads, TextFastRCNNOutputLayers, encode_vocabulary
from .sem_seg import OVDenseSemSegHead
from .train_net import CONFIGS, CONFIGS_DIR, config_path, do_test, do_train, load_config

register_ovdense_datasets()

__all__ = [
    "BUILTIN_DATASETS",
    "CONFIGS",
    "CONFIGS_DIR",
    "OVDenseCLIPBackbone",
    "OVDenseDetectionEvaluator",
    "OVDenseROIHeads",
    "OVDenseSemSegHead",
    "TextFastRCNNOutputLayers",
    "add_ovdense_config",
    "build_ovdense_clip_backbone",
    "clip_pixel_stats",
    "coco_detection_dicts",
    "config_path",
    "do_test",
    "do_train",
    "encode_vocabulary",
    "load_config",
    "register_ov_coco_instances",
    "register_ovdense_datasets",
]
