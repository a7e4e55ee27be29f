"""F-ViT on the shapes world, as a detectron2 LazyConfig (trains in minutes on a CPU).

The detectron2 twin of ovdense's ``configs/train/fvit_shapes.py``: the bundled tiny CLIP
(``ovdense-tiny-vit``, tag ``shapes``, patch 8) frozen, three pyramid levels of 64 channels
(scales 2, 1, 0.5 -> strides 4, 8, 16, plus the pooled 32), a two-conv RPN, a 2-fc box head
without convolutions, the text classifier over the 24 seen compositions; evaluated on
``ovdense_shapes_det_val`` with all 30 (the 6 held-out ones novel), F-ViT's CLIP ensemble on.
Trained on ``ovdense_shapes_det_train`` (1600 scenes of the training distribution, generated
on first use)::

    python tools/d2_train.py --config-file fvit_shapes
    python tools/d2_train.py --config-file fvit_shapes --eval-only \\
        train.init_checkpoint=output/d2_fvit_shapes/model_final.pth
"""

import torch
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from detectron2.layers import ShapeSpec
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.proposal_generator import RPN, StandardRPNHead
from detectron2.modeling.roi_heads import FastRCNNConvFCHead
from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import get_default_optimizer_params
from fvcore.common.param_scheduler import CosineParamScheduler

from ovdense.data import synthetic
from ovdense.integrations.detectron2 import (
    OVDenseCLIPBackbone,
    OVDenseDetectionEvaluator,
    OVDenseROIHeads,
    TextFastRCNNOutputLayers,
    encode_vocabulary,
)
from ovdense.modeling.backbones.tower import OPENAI_MEAN, OPENAI_STD
from ovdense.modeling.clip import load_clip

_NAMES = synthetic.class_names()
_SEEN = [_NAMES[i] for i in synthetic.class_groups()["seen"]]
_ALL = _NAMES[1:]
_MAX_ITER = 400
_SIZE = 128
_CLIP = L(load_clip)(model_name="ovdense-tiny-vit", pretrained="shapes")
_TEMPLATES = "shapes"
_STRIDES = [4, 8, 16, 32]

model = L(GeneralizedRCNN)(
    backbone=L(OVDenseCLIPBackbone)(
        clip=_CLIP,
        strategy="maskclip",
        scales=(2.0, 1.0, 0.5),
        out_channels=64,
        norm=True,
        dense_feature="clip_dense",
    ),
    proposal_generator=L(RPN)(
        in_features=["p2", "p3", "p4", "p5"],
        head=L(StandardRPNHead)(in_channels=64, num_anchors=3, conv_dims=[-1, -1]),
        anchor_generator=L(DefaultAnchorGenerator)(
            sizes=[[8 * s] for s in _STRIDES],
            aspect_ratios=[0.5, 1.0, 2.0],
            strides=_STRIDES,
            offset=0.0,
        ),
        anchor_matcher=L(Matcher)(
            thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True
        ),
        box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
        batch_size_per_image=128,
        positive_fraction=0.5,
        pre_nms_topk=(600, 300),
        post_nms_topk=(300, 100),
        nms_thresh=0.7,
    ),
    roi_heads=L(OVDenseROIHeads)(
        num_classes=len(_SEEN),
        batch_size_per_image=128,
        positive_fraction=0.25,
        proposal_matcher=L(Matcher)(
            thresholds=[0.5], labels=[0, 1], allow_low_quality_matches=False
        ),
        box_in_features=["p2", "p3", "p4"],
        box_pooler=L(ROIPooler)(
            output_size=7, scales=(1 / 4, 1 / 8, 1 / 16), sampling_ratio=0, pooler_type="ROIAlignV2"
        ),
        box_head=L(FastRCNNConvFCHead)(
            input_shape=ShapeSpec(channels=64, height=7, width=7), conv_dims=[], fc_dims=[256, 256]
        ),
        box_predictor=L(TextFastRCNNOutputLayers)(
            input_shape=ShapeSpec(channels=256),
            box2box_transform=L(Box2BoxTransform)(weights=(10.0, 10.0, 5.0, 5.0)),
            class_embeds=L(encode_vocabulary)(clip=_CLIP, names=_SEEN, templates=_TEMPLATES),
            background_embed=L(encode_vocabulary)(
                clip=_CLIP, names=["background"], templates=_TEMPLATES
            ),
            temperature=50.0,
            learn_background=True,
            background_weight=0.6,
            cls_relu=True,
            reg_fc_dim=256,
            clip_temperature=75.0,
            alpha=0.1,
            beta=0.8,
            test_score_thresh=0.01,
            test_nms_thresh=0.4,
            test_topk_per_image=100,
        ),
        clip_in_feature="clip_dense",
        clip_stride=8,
        ensemble=True,
    ),
    pixel_mean=[255.0 * m for m in OPENAI_MEAN],
    pixel_std=[255.0 * s for s in OPENAI_STD],
    input_format="RGB",
)

# the vocabulary detected at evaluation: all 30 compositions, the held-out ones novel
test_vocabulary = dict(
    class_embeds=L(encode_vocabulary)(clip=_CLIP, names=_ALL, templates=_TEMPLATES),
    is_base=[name in _SEEN for name in _ALL],
)

dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="ovdense_shapes_det_train"),
        mapper=L(DatasetMapper)(
            is_train=True,
            augmentations=[L(T.ResizeShortestEdge)(short_edge_length=_SIZE, max_size=_SIZE)],
            image_format="RGB",
        ),
        total_batch_size=4,
        num_workers=0,
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names="ovdense_shapes_det_val", filter_empty=False),
        mapper=L(DatasetMapper)(
            is_train=False,
            augmentations=[L(T.ResizeShortestEdge)(short_edge_length=_SIZE, max_size=_SIZE)],
            image_format="RGB",
        ),
        num_workers=0,
    ),
    evaluator=L(OVDenseDetectionEvaluator)(dataset_name="${..test.dataset.names}"),
)

optimizer = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
    lr=1e-3,
    betas=(0.9, 0.999),
    weight_decay=0.1,
)

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.0),
    warmup_length=50 / _MAX_ITER,
    warmup_factor=0.01,
)

train = dict(
    output_dir="output/d2_fvit_shapes",
    init_checkpoint="",
    max_iter=_MAX_ITER,
    amp=dict(enabled=False),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=100, max_to_keep=2),
    eval_period=_MAX_ITER,
    log_period=20,
    clip_grad=1.0,
    device="cpu",
    seed=0,
)
