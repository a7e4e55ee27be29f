"""CLIPSelf (Wu et al., ICLR 2024) on CLIP ViT-B/16 (OpenAI weights), the paper's COCO recipe.

Self-distils the dense features of the image tower on unlabeled COCO train2017 images
(annotations unused): images at 1024 with one size per batch from {320, 640, 896, 1024},
regions = a 2x2 grid of image patches, teacher crops at 224, all 12 blocks trained.
AdamW lr 1e-5, wd 0.1, 1000 warmup iterations then cosine, batch 2 per GPU.

Length: the paper trains 6 epochs on 8 GPUs x 2 images. COCO train2017 has 118,287 images, so
an epoch is 118,287 // 16 = 7,392 iterations and 6 epochs are ``max_iter = 44,352``. With
another number of GPUs ``W`` use ``max_iter = 6 * (118287 // (2 * W))`` (and the same
``lr_scheduler.max_iter``), e.g. 354,858 on one GPU.

Run (images under ``$OVDENSE_DATASETS/coco/train2017`` or any folder)::

    torchrun --nproc-per-node 8 tools/train.py --config ovdense/configs/train/clipself_vitb16.py \
        dataloader.dataset.root=/data/coco/train2017

Then export the student for every dense strategy::

    trainer.model.save_open_clip_checkpoint("output/clipself_vitb16/open_clip_vitb16.pt")
    load_clip("ViT-B-16", checkpoint="output/clipself_vitb16/open_clip_vitb16.pt")

Region proposals instead of the grid: ``model.proposals=/path/to/coco_format_boxes.json``.
"""

import torch

from ovdense.config import LazyCall as L
from ovdense.data.images import ImageFolderDataset, MultiScaleCollate
from ovdense.engine import WarmupCosine
from ovdense.modeling.clip import load_clip
from ovdense.modeling.distill import CLIPSelf

_IMAGES_PER_EPOCH = 118_287  # COCO train2017
_GPUS = 8
_BATCH_PER_GPU = 2
_EPOCHS = 6
_MAX_ITER = _EPOCHS * (_IMAGES_PER_EPOCH // (_GPUS * _BATCH_PER_GPU))  # 44,352
_SIZES = [320, 640, 896, 1024]

model = L(CLIPSelf)(
    clip=L(load_clip)(model_name="ViT-B-16", pretrained="openai"),
    trainable_blocks=None,  # all 12 blocks
    grid=(2, 2),
    crop_size=224,
    proposals=None,
    strategy="vanilla",
    max_regions=20,
    roi_size=1,
)

dataloader = dict(
    dataset=L(ImageFolderDataset)(root="datasets/coco/train2017", image_size=_SIZES),
    batch_size=_BATCH_PER_GPU,
    num_workers=4,
    shuffle=True,
    drop_last=True,
    collate_fn=L(MultiScaleCollate)(sizes=_SIZES, seed=0),
)

optimizer = L(torch.optim.AdamW)(lr=1e-5, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6)

lr_scheduler = L(WarmupCosine)(max_iter=_MAX_ITER, warmup_iters=1000, warmup_factor=0.001)

train = dict(
    max_iter=_MAX_ITER,
    grad_accum=1,
    amp=True,
    clip_grad=None,
    log_period=20,
    checkpoint_period=5000,
    output_dir="output/clipself_vitb16",
    seed=0,
)
