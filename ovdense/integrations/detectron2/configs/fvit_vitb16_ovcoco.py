"""F-ViT on OV-COCO (48 base / 17 novel) with a frozen EVA02-CLIP ViT-B/16 (CLIPSelf weights),
as a detectron2 LazyConfig.

The settings of ovdense's ``configs/train/fvit_vitb16_ovcoco.py`` (F-ViT's recipe from the
CLIPSelf repository, ``fvit_vitb16_upsample_fpn_bs64_3e_ovcoco_eva_clipself_proposals.py``):
blocks 3/5/7/11 into the simple pyramid (scales 4, 2, 1, 0.5 -> p2..p5, pooled p6; 256
channels), the ``maskclip`` last block, 640 px images, anchors 8 x stride, a two-conv RPN (256
anchors / image, 2000 / 1000 pre-NMS, 1000 post-NMS), 512 RoIs / image at 25 % positives, a
4-conv 2-fc box head (256 / 512), the text classifier (temperature 50 learned, the fixed text
``"background"`` embedding, background loss weight 0.6), class-agnostic L1 box loss with target
weights 10 / 10 / 5 / 5, test NMS 0.4, score 0.01, 100 detections, the CLIP RoI ensemble 75 /
alpha 0.1 / beta 0.8; AdamW lr 1e-4, weight decay 0.1, gradient clipping 1.0, 250 warmup
iterations then constant, batch 64 (8 GPUs x 8), 3 epochs, mixed precision. detectron2's own
pieces beside ovdense's: its RPN losses (binary cross-entropy + L1), ROIAlignV2, its
``NaiveSyncBatchNorm`` in the box head (F-ViT: SyncBN) while the pyramid keeps per-GPU batch
norm as ovdense's does; dynamic loss scaling (F-ViT: static 512). F-ViT's training
augmentation, which ovdense's own trainer lacks, is here: horizontal flip, resize by a random
0.1-2 of 640, a 640 crop (detectron2's ``ResizeScale`` + ``FixedSizeCrop``). Images are
normalised with the CLIP's mean / std as in ovdense (F-ViT's mmdet pipeline uses ImageNet's).

Weights: ``checkpoints/eva_vitb16_coco_clipself_proposals.pt`` (CLIPSelf's, see README
"EVA02-CLIP towers"). Data: ``ovdense_coco_ov_train`` / ``ovdense_coco_ov_val`` under
``$OVDENSE_DATASETS`` (F-ViT's OV-COCO JSONs or COCO's own)::

    python tools/d2_train.py --config-file fvit_vitb16_ovcoco --num-gpus 8
"""

import torch
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from detectron2.modeling import GeneralizedRCNN
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import ConstantParamScheduler

from ovdense.data.ov_splits import COCO_OV_BASE, coco_ov_classes
from ovdense.integrations.detectron2 import (
    OVDenseCLIPBackbone,
    OVDenseDetectionEvaluator,
    encode_vocabulary,
)
from ovdense.integrations.detectron2.lazy_parts import (
    fvit_adamw,
    fvit_roi_heads,
    fvit_rpn,
    fvit_test_loader,
)
from ovdense.modeling.backbones.tower import OPENAI_MEAN, OPENAI_STD
from ovdense.modeling.clip import load_clip

_SEEN = list(COCO_OV_BASE)
_ALL = coco_ov_classes()
_GPUS = 8
_BATCH_PER_GPU = 8
_MAX_ITER = 3 * 107_761 // (_GPUS * _BATCH_PER_GPU)
_SIZE = 640
_CLIP = L(load_clip)(
    model_name="EVA02-B-16", checkpoint="checkpoints/eva_vitb16_coco_clipself_proposals.pt"
)
_TEMPLATES = "openai_imagenet"

model = L(GeneralizedRCNN)(
    backbone=L(OVDenseCLIPBackbone)(
        clip=_CLIP,
        strategy="maskclip",
        out_indices=(3, 5, 7, 11),
        scales=(4.0, 2.0, 1.0, 0.5),
        out_channels=256,
        norm=True,
        dense_feature="clip_dense",
    ),
    proposal_generator=fvit_rpn(
        strides=[4, 8, 16, 32, 64],
        channels=256,
        batch_size_per_image=256,
        pre_nms_topk=(2000, 1000),
        post_nms_topk=(1000, 1000),
    ),
    roi_heads=fvit_roi_heads(
        clip=_CLIP,
        train_classes=_SEEN,
        templates=_TEMPLATES,
        strides=[4, 8, 16, 32],
        channels=256,
        conv_dims=[256, 256, 256, 256],
        fc_dims=[512, 512],
        conv_norm="SyncBN",
        batch_size_per_image=512,
        learn_background=False,
        clip_stride=16,
    ),
    pixel_mean=[255.0 * m for m in OPENAI_MEAN],
    pixel_std=[255.0 * s for s in OPENAI_STD],
    input_format="RGB",
)

# the vocabulary detected at evaluation: the 65 OV-COCO classes, the 17 novel ones marked
test_vocabulary = dict(
    class_embeds=L(encode_vocabulary)(clip=_CLIP, names=_ALL, templates=_TEMPLATES),
    is_base=[name in _SEEN for name in _ALL],
)

dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="ovdense_coco_ov_train"),
        mapper=L(DatasetMapper)(
            is_train=True,
            augmentations=[  # F-ViT's: flip, resize by 0.1-2 of 640, 640 crop
                L(T.RandomFlip)(horizontal=True),
                L(T.ResizeScale)(
                    min_scale=0.1, max_scale=2.0, target_height=_SIZE, target_width=_SIZE
                ),
                L(T.FixedSizeCrop)(crop_size=(_SIZE, _SIZE), pad=False),
            ],
            image_format="RGB",
        ),
        total_batch_size=_GPUS * _BATCH_PER_GPU,
        num_workers=8,
    ),
    test=fvit_test_loader("ovdense_coco_ov_val", size=_SIZE, num_workers=4),
    evaluator=L(OVDenseDetectionEvaluator)(dataset_name="${..test.dataset.names}"),
)

optimizer = fvit_adamw(lr=1e-4)

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(ConstantParamScheduler)(value=1.0),
    warmup_length=250 / _MAX_ITER,
    warmup_factor=0.001,
)

# the GPU when there is one (the recipe's setting); the CPU otherwise, where it runs (slowly)
_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

train = dict(
    output_dir="output/d2_fvit_vitb16_ovcoco",
    init_checkpoint="",
    max_iter=_MAX_ITER,
    amp=dict(enabled=_DEVICE == "cuda"),  # fp16 as F-ViT, on a GPU
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=1000, max_to_keep=2),
    eval_period=_MAX_ITER,
    log_period=50,
    clip_grad=1.0,
    device=_DEVICE,
    seed=0,
)
