"""Shared base of the training-free segmentation presets (not a preset itself).

Every key here is a constructor argument of TrainingFreeSegmentor; see its docstring. Presets
import ``model`` from this file and change what their paper changes. The segmentor's slots:
``head`` (a name registered in ``ovdense.modeling.heads.SEG_HEADS``, with ``head_kwargs``, or
``L(SomeHead)(...)``), ``refiner`` (``ovdense.modeling.refiners.REFINERS``, with
``refiner_kwargs``) and ``decode_order`` (``"ovdense"``, or CLIP-DINOiser's ``"paper"``).
"""

from ovdense.config import LazyCall as L
from ovdense.modeling.clip import load_clip
from ovdense.modeling.segmentors import TrainingFreeSegmentor

model = L(TrainingFreeSegmentor)(
    clip=L(load_clip)(model_name="ViT-B-16", pretrained="openai"),
    strategy="vanilla",
    strategy_kwargs={},
    pos_interp="size",
    templates="openai_imagenet",
    short_side=336,
    max_long_side=2048,
    window=224,
    stride=112,
    window_batch_size=8,
    logit_scale=40.0,
    prob_thd=0.0,
    area_thd=None,
    background_index=None,  # the class named "background", if any (thresholds need one)
    pamr=None,
    precision="fp32",
    text_cache_dir=None,
    head="cosine",
    head_kwargs={},
    refiner=None,
    refiner_kwargs={},
    decode_order="ovdense",
)
