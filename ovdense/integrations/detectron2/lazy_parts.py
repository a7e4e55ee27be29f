"""F-ViT's RPN, RoI heads, test loader and optimizer as detectron2 ``LazyCall`` trees, shared by
the shipped LazyConfigs.

The configs under :data:`~ovdense.integrations.detectron2.CONFIGS_DIR` differ in sizes only
(pyramid levels and channels, sampled anchors / RoIs, box-head widths, image size, learning
rate); F-ViT's fixed settings
live here once. A level is named by its stride: stride ``s`` is ``p{log2 s}`` (4 -> ``p2``).
Nothing is built: each function returns the ``L(...)(...)`` config a LazyConfig holds, and
``detectron2.config.instantiate`` builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, get_detection_dataset_dicts
from detectron2.data import transforms as T
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.proposal_generator import RPN, StandardRPNHead
from detectron2.modeling.roi_heads import FastRCNNConvFCHead
from detectron2.solver.build import get_default_optimizer_params

from .roi_heads import OVDenseROIHeads, TextFastRCNNOutputLayers, encode_vocabulary

__all__ = ["fvit_adamw", "fvit_roi_heads", "fvit_rpn", "fvit_test_loader", "level_name"]


def level_name(stride: int) -> str:
    """The pyramid level of ``stride`` (a power of two >= 2): ``p{log2 stride}``, 16 -> ``p4``."""
    if stride < 2 or stride & (stride - 1):
        raise ValueError(
            f"A pyramid stride is a power of two >= 2 (4 -> p2, 8 -> p3, ...); got {stride}."
        )
    return f"p{stride.bit_length() - 1}"


def fvit_rpn(
    *,
    strides: Sequence[int],
    channels: int,
    batch_size_per_image: int,
    pre_nms_topk: tuple[int, int],
    post_nms_topk: tuple[int, int],
) -> Any:
    """detectron2's ``RPN`` on the pyramid levels of ``strides`` (F-ViT's settings).

    A two-conv ``StandardRPNHead`` on ``channels``-channel levels, three anchors per location
    (aspect ratios 0.5 / 1 / 2, size 8 x stride, offset 0), IoU thresholds 0.3 / 0.7 with
    low-quality matches, unit box-delta weights, half the ``batch_size_per_image`` sampled
    anchors positive, NMS 0.7. ``pre_nms_topk`` / ``post_nms_topk``: (training, test).
    """
    return L(RPN)(
        in_features=[level_name(s) for s in strides],
        head=L(StandardRPNHead)(in_channels=channels, num_anchors=3, conv_dims=[-1, -1]),
        anchor_generator=L(DefaultAnchorGenerator)(
            sizes=[[8 * s] for s in strides],
            aspect_ratios=[0.5, 1.0, 2.0],
            strides=list(strides),
            offset=0.0,
        ),
        anchor_matcher=L(Matcher)(
            thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True
        ),
        box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
        batch_size_per_image=batch_size_per_image,
        positive_fraction=0.5,
        pre_nms_topk=pre_nms_topk,
        post_nms_topk=post_nms_topk,
        nms_thresh=0.7,
    )


def fvit_roi_heads(
    *,
    clip: Any,
    train_classes: Sequence[str],
    templates: str,
    strides: Sequence[int],
    channels: int,
    conv_dims: Sequence[int],
    fc_dims: Sequence[int],
    batch_size_per_image: int,
    learn_background: bool,
    clip_stride: int,
    conv_norm: str | None = None,
) -> Any:
    """:class:`OVDenseROIHeads` with :class:`TextFastRCNNOutputLayers` (F-ViT's settings).

    RoIs are pooled (``ROIAlignV2``, 7 x 7) from the ``channels``-channel levels of
    ``strides``; the box head is ``conv_dims`` 3x3 convolutions (normalised by ``conv_norm``
    when given) then the ``fc_dims`` layers; the predictor scores the last fc's features
    against the text embeddings of ``train_classes`` (``clip`` is the ``L(load_clip)(...)``
    config, ``templates`` a template set), temperature 50, the fixed or learned
    (``learn_background``) ``"background"`` embedding at loss weight 0.6, a ``fc_dims[-1]``
    hidden box-regression fc with target weights 10 / 10 / 5 / 5; test score 0.01, NMS 0.4,
    100 detections; F-ViT's CLIP RoI ensemble (75, alpha 0.1, beta 0.8) on the dense CLIP map
    of stride ``clip_stride``. Sampled RoIs: ``batch_size_per_image`` per image, a quarter
    positive at IoU 0.5.
    """
    box_head = L(FastRCNNConvFCHead)(
        input_shape=ShapeSpec(channels=channels, height=7, width=7),
        conv_dims=list(conv_dims),
        fc_dims=list(fc_dims),
    )
    if conv_norm is not None:
        box_head.conv_norm = conv_norm
    return L(OVDenseROIHeads)(
        num_classes=len(train_classes),
        batch_size_per_image=batch_size_per_image,
        positive_fraction=0.25,
        proposal_matcher=L(Matcher)(
            thresholds=[0.5], labels=[0, 1], allow_low_quality_matches=False
        ),
        box_in_features=[level_name(s) for s in strides],
        box_pooler=L(ROIPooler)(
            output_size=7,
            scales=tuple(1 / s for s in strides),
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
        ),
        box_head=box_head,
        box_predictor=L(TextFastRCNNOutputLayers)(
            input_shape=ShapeSpec(channels=fc_dims[-1]),
            box2box_transform=L(Box2BoxTransform)(weights=(10.0, 10.0, 5.0, 5.0)),
            class_embeds=L(encode_vocabulary)(
                clip=clip, names=list(train_classes), templates=templates
            ),
            background_embed=L(encode_vocabulary)(
                clip=clip, names=["background"], templates=templates
            ),
            temperature=50.0,
            learn_background=learn_background,
            background_weight=0.6,
            cls_relu=True,
            reg_fc_dim=fc_dims[-1],
            clip_temperature=75.0,
            alpha=0.1,
            beta=0.8,
            test_score_thresh=0.01,
            test_nms_thresh=0.4,
            test_topk_per_image=100,
        ),
        clip_in_feature="clip_dense",
        clip_stride=clip_stride,
        ensemble=True,
    )


def fvit_test_loader(dataset: str, size: int, num_workers: int) -> Any:
    """detectron2's test loader of the registered ``dataset`` (images without boxes kept), RGB
    images resized to a shortest edge of ``size`` with the longest at most ``size``."""
    return L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names=dataset, filter_empty=False),
        mapper=L(DatasetMapper)(
            is_train=False,
            augmentations=[L(T.ResizeShortestEdge)(short_edge_length=size, max_size=size)],
            image_format="RGB",
        ),
        num_workers=num_workers,
    )


def fvit_adamw(lr: float) -> Any:
    """F-ViT's optimizer: AdamW at ``lr``, betas 0.9 / 0.999, weight decay 0.1 (none on norm
    layers), over the model's trainable parameters (``params.model`` is set by the trainer)."""
    return L(torch.optim.AdamW)(
        params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
        lr=lr,
        betas=(0.9, 0.999),
        weight_decay=0.1,
    )
