"""F-ViT on OV-COCO (48 base / 17 novel): frozen EVA02-CLIP ViT-B/16 with CLIPSelf weights.

F-ViT's recipe from the CLIPSelf repository
(``F-ViT/configs/ov_coco/fvit_vitb16_upsample_fpn_bs64_3e_ovcoco_eva_clipself_proposals.py``):
blocks 3/5/7/11 into the simple pyramid (256 channels), the ``maskclip`` last block (F-ViT's
block without attention), 640 px images, 4-conv 2-fc box head, learned temperature 50, the
text ``"background"`` embedding kept fixed, background loss weight 0.6, CLIP RoI ensemble
75 / alpha 0.1 / beta 0.8; AdamW lr 1e-4, wd 0.1, gradient clipping 1.0, 250 warmup iterations,
batch 64, 3 epochs. Differences: torchvision's RPN losses; no multi-scale resize / random crop /
flip augmentation (the images are resized to 640 by torchvision's transform).

Weights: CLIPSelf's ``eva_vitb16_coco_clipself_proposals.pt`` read by ``load_clip`` (see README
"EVA02-CLIP towers"). Data: F-ViT's OV-COCO annotation files
(``instances_train2017_seen_2_65_cat.json``, ``instances_val2017_all_2.json``) or COCO's own
instances files (novel annotations are left out of the targets by the vocabulary)::

    torchrun --nproc-per-node 8 -m ovdense train --config train/fvit_vitb16_ovcoco
    ovdense eval-det --config train/fvit_vitb16_ovcoco --checkpoint output/fvit_vitb16_ovcoco \\
        --json datasets/coco/annotations/instances_val2017.json --images datasets/coco/val2017

Length: 3 epochs of the 107,761 train2017 images with base annotations at 64 images per step
(8 GPUs x 8) is ``max_iter = 3 * 107761 // 64 = 5051``.
"""

import torch

from ovdense.config import LazyCall as L
from ovdense.data.detection import CocoDetection
from ovdense.data.ov_splits import COCO_OV_BASE, COCO_OV_NOVEL
from ovdense.engine import WarmupStep
from ovdense.modeling.clip import load_clip
from ovdense.modeling.detection import build_fvit

_GPUS = 8
_BATCH_PER_GPU = 8
_MAX_ITER = 3 * 107_761 // (_GPUS * _BATCH_PER_GPU)

model = L(build_fvit)(
    clip=L(load_clip)(
        model_name="EVA02-B-16", checkpoint="checkpoints/eva_vitb16_coco_clipself_proposals.pt"
    ),
    train_classes=list(COCO_OV_BASE),
    strategy="maskclip",
    out_indices=(3, 5, 7, 11),
    templates="openai_imagenet",
    pyramid_channels=256,
    min_size=640,
    max_size=640,
    box_convs=4,
    box_fc_dim=512,
    temperature=50.0,
    learn_background=False,
    background_weight=0.6,
    clip_temperature=75.0,
    alpha=0.1,
    beta=0.8,
)

dataloader = dict(
    dataset=L(CocoDetection)(
        json_path="datasets/coco/zero-shot/instances_train2017_seen_2_65_cat.json",
        image_dir="datasets/coco/train2017",
        classes=list(COCO_OV_BASE),
        keep_empty=False,
        novel_classes=list(COCO_OV_NOVEL),
    ),
    batch_size=_BATCH_PER_GPU,
    num_workers=8,
    shuffle=True,
    drop_last=True,
    collate_fn="ovdense.data.detection.detection_collate",
)

optimizer = L(torch.optim.AdamW)(lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1)

lr_scheduler = L(WarmupStep)(steps=[], warmup_iters=250, warmup_factor=0.001)

train = dict(
    max_iter=_MAX_ITER,
    clip_grad=1.0,
    amp=True,
    log_period=50,
    checkpoint_period=1000,
    output_dir="output/fvit_vitb16_ovcoco",
    seed=0,
)
