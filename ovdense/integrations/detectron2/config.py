"""The ``MODEL.OVDENSE`` keys of detectron2's yacs configs (the registry route; the LazyConfigs
under ``configs/`` build the same modules directly)."""

from __future__ import annotations

from typing import Any

from detectron2.config import CfgNode as CN

__all__ = ["add_ovdense_config"]


def add_ovdense_config(cfg: Any) -> Any:
    """Add ``cfg.MODEL.OVDENSE`` with its defaults (F-ViT's OV-COCO settings) and return ``cfg``.

    With ``MODEL.BACKBONE.NAME = "build_ovdense_clip_backbone"``, ``MODEL.ROI_HEADS.NAME =
    "OVDenseROIHeads"`` (detection) or ``MODEL.SEM_SEG_HEAD.NAME = "OVDenseSemSegHead"``
    (segmentation), ``detectron2.modeling.build_model(cfg)`` builds ovdense's modules:

    - ``CLIP``: ``MODEL_NAME`` + ``PRETRAINED`` (an open_clip tag) and/or ``CHECKPOINT`` (a
      file), or ``CONFIG`` (a JSON architecture, random weights seeded by ``SEED``);
    - ``STRATEGY``, ``OUT_INDICES`` (empty: F-ViT's taps), ``SCALES`` (empty: no pyramid),
      ``PYRAMID_CHANNELS``, ``PYRAMID_NORM``, ``DENSE_FEATURE``: the backbone;
    - ``TRAIN_CLASSES`` (the training vocabulary, ``ROI_HEADS.NUM_CLASSES`` must equal its
      length), ``TEMPLATES``, ``TEMPERATURE``, ``LEARN_BACKGROUND``, ``BACKGROUND_WEIGHT``,
      ``REG_FC_DIM``, ``CLIP_TEMPERATURE``, ``ALPHA``, ``BETA``, ``ENSEMBLE``: the box predictor;
    - ``SEG_HEAD``, ``LOGIT_SCALE``: the segmentation head.

    The CLIP is loaded by each module that needs it (backbone, text embeddings).
    """
    o = cfg.MODEL.OVDENSE = CN()
    o.CLIP = CN()
    o.CLIP.MODEL_NAME = "EVA02-B-16"
    o.CLIP.PRETRAINED = ""
    o.CLIP.CHECKPOINT = ""
    o.CLIP.CONFIG = ""
    o.CLIP.SEED = 0
    o.STRATEGY = "maskclip"
    o.OUT_INDICES = []
    o.SCALES = [4.0, 2.0, 1.0, 0.5]
    o.PYRAMID_CHANNELS = 256
    o.PYRAMID_NORM = True
    o.DENSE_FEATURE = "clip_dense"
    o.TRAIN_CLASSES = []
    o.TEMPLATES = "openai_imagenet"
    o.TEMPERATURE = 50.0
    o.LEARN_BACKGROUND = False
    o.BACKGROUND_WEIGHT = 0.6
    o.REG_FC_DIM = 0
    o.CLIP_TEMPERATURE = 75.0
    o.ALPHA = 0.1
    o.BETA = 0.8
    o.ENSEMBLE = True
    o.SEG_HEAD = "cosine"
    o.LOGIT_SCALE = 100.0
    return cfg
