"""CAT-Seg (Cho et al., CVPR 2024) on CLIP ViT-B/16 (OpenAI weights): the official recipe
(``configs/vitb_384.yaml`` of KU-CVLAB/CAT-Seg), trained on COCO-Stuff 164k (171 classes).

Model: dense CLIP with CAT-Seg's last block (``catseg`` strategy), the cost-aggregation head
(:class:`~ovdense.modeling.heads.CATSegHead`: 2 aggregation layers, hidden 128, 4 heads, Swin
windows 12 on the 24 x 24 grid, class pooling 2 in training, pad length 256, decoder (64, 32)
guided by blocks 3 and 7), one prompt "A photo of a {} in the scene". CLIP's query and value
projections of both towers train (``finetune="qv"``) at 0.01 x the head's learning rate.
Loss: binary cross-entropy against one-hot labels at the crop size.

Data: COCO-Stuff train2017 (``coco_stuff171_train``, layout in datasets/README.md), short
side resized to 384 (long side <= 1333), random 384 x 384 crops, SSD photometric distortion,
horizontal flips; CLIP sees the crop at 384.

Solver: AdamW, lr 2e-4 (CLIP 2e-6, no weight decay on CLIP: see docs/methods.md#cat-seg),
weight decay 1e-4, cosine to 0 over 80,000 iterations, no warmup, batch 4 (in total: with
``W`` processes set ``dataloader.batch_size=4/W``), global gradient-norm clipping at 0.01.
The official run uses fp32; ``train.amp=True`` uses fp16 autocast on a GPU.

Run::

    export OVDENSE_DATASETS=~/datasets   # or dataloader.dataset.dataset.data_root=...
    torchrun --nproc-per-node 4 -m ovdense train --config configs/train/catseg_vitb16.py \\
        dataloader.batch_size=1
    ovdense train --config configs/train/catseg_vitb16.py     # one GPU, batch 4

Evaluate the trained head zero-shot (A-847, PC-459, A-150, PC-59, VOC-20)::

    ovdense eval-all --config catseg model.checkpoint=output/catseg_vitb16/model_0080000.pt
"""

import torch

from ovdense.config import LazyCall as L
from ovdense.data import build_semseg_dataset, dataset_vocabulary
from ovdense.data.augment import SemSegCropDataset
from ovdense.engine import WarmupCosine
from ovdense.modeling.clip import load_clip
from ovdense.modeling.segmentors import CATSegModel

_MAX_ITER = 80_000
_CROP = 384

model = L(CATSegModel)(
    clip=L(load_clip)(model_name="ViT-B-16", pretrained="openai"),
    class_names=L(dataset_vocabulary)(name="coco_stuff171"),
    head_kwargs=dict(
        num_layers=2,
        hidden_dim=128,
        num_heads=4,
        window_size=12,
        pool_size=2,
        eval_pool_size=1,
        pad_len=256,
        guidance_dim=128,
        decoder_dims=(64, 32),
        decoder_guidance_dims=(256, 128),
        decoder_guidance_proj_dims=(32, 16),
        class_chunk=None,  # training: all 171 classes at once
    ),
    templates="catseg",
    finetune="qv",
    clip_lr=2e-6,
    clip_weight_decay=0.0,
    image_size=_CROP,
    ignore_label=255,
)

dataloader = dict(
    dataset=L(SemSegCropDataset)(
        dataset=L(build_semseg_dataset)(name="coco_stuff171_train"),
        crop_size=_CROP,
        short_side=_CROP,
        max_long_side=1333,
        photometric=True,
        flip=True,
        ignore_label=255,
    ),
    batch_size=4,
    num_workers=8,
    shuffle=True,
    drop_last=True,
)

optimizer = L(torch.optim.AdamW)(lr=2e-4, weight_decay=1e-4)

lr_scheduler = L(WarmupCosine)(max_iter=_MAX_ITER, warmup_iters=0)

train = dict(
    max_iter=_MAX_ITER,
    grad_accum=1,
    amp=False,
    clip_grad=0.01,
    log_period=20,
    checkpoint_period=5000,
    output_dir="output/catseg_vitb16",
    seed=0,
)
