"""F-ViT on OV-LVIS (866 base = common + frequent / 337 novel = rare categories): frozen
EVA02-CLIP ViT-B/16 with CLIPSelf weights, Mask R-CNN heads.

F-ViT's recipe from the CLIPSelf repository
(``F-ViT/configs/ov_lvis/fvit_vitb16_upsample_fpn_bs64_4x_ovlvis_eva_clipself_patches.py``,
based on ``..._eva_original.py``): blocks 3/5/7/11 into the simple pyramid (256 channels), the
``maskclip`` last block, 1024 px images, an RPN with two batch-normed convolutions
(``CustomRPNHead``), 4-conv 2-fc box head, learned temperature 50, the text ``"background"``
embedding kept fixed, background loss weight 0.9, a class-agnostic 4-conv mask head on 14x14
RoIs (28x28 masks); at test time the CLIP RoI ensemble with temperature 50 / alpha 0.1 /
beta 0.6, score threshold 1e-4, NMS 0.5, 300 detections per image; AdamW lr 1e-4, wd 0.1,
gradient clipping 1.0, 250 warmup iterations (factor 0.001), batch 64, 48 epochs with the lr
divided by 10 after epochs 32 and 44, mixed precision.

The training set is LVIS v1 train without the rare categories' annotations (F-ViT's
``lvis_v1_train_seen_1203_cat.json``, catalog name ``lvis_v1_train_norare``; or
``ovdense.data.ov_splits.write_lvis_ov_train``), the training vocabulary the 866 base classes
(F-ViT keeps 1203 logits and masks the rare ones out of the loss: the same softmax), images
without base annotations left out (mmdet's ``filter_empty_gt``). ``novel_classes`` makes the
dataset refuse a rare class as a target. No repeat-factor sampling (F-ViT's config has none).

Large-scale jitter as F-ViT's pipeline (:class:`~ovdense.data.augment.LargeScaleJitter`: long
side scaled to 1024 x U(0.1, 2.0), a random crop of at most 1024 x 1024 with boxes recomputed
from the cropped masks, horizontal flip 0.5, batches padded to 1024: ``train_size``).
Differences: torchvision's RPN losses; boxes under 1 px are dropped (mmdet keeps those over
0.01 px); an image left without targets by the crop trains as background (mmdet draws another
image).

Weights: CLIPSelf's ``eva_vitb16_lvis_clipself_patches.pt`` read by ``load_clip``. Data
layout: ``datasets/README.md`` (LVIS v1)::

    torchrun --nproc-per-node 8 -m ovdense train --config train/fvit_vitb16_ovlvis
    ovdense eval-det --config train/fvit_vitb16_ovlvis --checkpoint output/fvit_vitb16_ovlvis \\
        --dataset lvis_v1_val --data-root datasets

Length: 48 epochs of LVIS v1 train's 100,170 images (LVIS's published count, not measured here;
F-ViT's epochs count only the images with base annotations) at 64 images per step (8 GPUs x 8):
``max_iter = 48 * 100170 // 64 = 75127``, lr steps at epochs 32 and 44 (50085, 68866).
"""

import torch

from ovdense.config import LazyCall as L
from ovdense.data.augment import LargeScaleJitter
from ovdense.data.detection import CocoDetection
from ovdense.data.ov_splits import lvis_ov_split
from ovdense.engine import WarmupStep
from ovdense.modeling.clip import load_clip
from ovdense.modeling.detection import build_fvit

_GPUS = 8
_BATCH_PER_GPU = 8
_IMAGES = 100_170
_STEP = _GPUS * _BATCH_PER_GPU
BASE, NOVEL = lvis_ov_split()

model = L(build_fvit)(
    clip=L(load_clip)(
        model_name="EVA02-B-16", checkpoint="checkpoints/eva_vitb16_lvis_clipself_patches.pt"
    ),
    train_classes=BASE,
    strategy="maskclip",
    out_indices=(3, 5, 7, 11),
    templates="openai_imagenet",
    pyramid_channels=256,
    min_size=1024,
    max_size=1024,
    box_convs=4,
    box_fc_dim=512,
    rpn_pre_nms_top_n=(2000, 2000),
    rpn_post_nms_top_n=(1000, 1000),
    rpn_norm=True,
    temperature=50.0,
    learn_background=False,
    background_weight=0.9,
    clip_temperature=50.0,
    alpha=0.1,
    beta=0.6,
    score_thresh=1e-4,
    nms_thresh=0.5,
    detections_per_img=300,
    mask_head=True,
    mask_roi_size=14,
    mask_convs=4,
    train_size=1024,
)

dataloader = dict(
    dataset=L(LargeScaleJitter)(
        dataset=L(CocoDetection)(
            json_path="datasets/lvis_v1/annotations/lvis_v1_train_seen_1203_cat.json",
            image_dir="datasets/lvis_v1",
            classes=BASE,
            keep_empty=False,
            with_masks=True,
            novel_classes=NOVEL,
        ),
        size=1024,
        ratio_range=(0.1, 2.0),
        flip=0.5,
        min_box_size=1.0,
    ),
    batch_size=_BATCH_PER_GPU,
    num_workers=8,
    shuffle=True,
    drop_last=True,
    collate_fn="ovdense.data.detection.detection_collate",
)

optimizer = L(torch.optim.AdamW)(lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1)

lr_scheduler = L(WarmupStep)(
    steps=[32 * _IMAGES // _STEP, 44 * _IMAGES // _STEP], warmup_iters=250, warmup_factor=0.001
)

train = dict(
    max_iter=48 * _IMAGES // _STEP,
    clip_grad=1.0,
    amp=True,
    log_period=50,
    checkpoint_period=5000,
    output_dir="output/fvit_vitb16_ovlvis",
    seed=0,
)
