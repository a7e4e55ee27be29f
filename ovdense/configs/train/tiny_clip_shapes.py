"""The tiny CLIP of the shapes world (``ovdense-tiny-vit``, tag ``shapes``): a test/demo asset.

Contrastive image-caption training from scratch on procedural scenes
(:mod:`ovdense.data.synthetic`, world seed 0, 64 px, 1-5 objects, held-out compositions never
shown) on CPU. Every scene is used once: ``max_iter * batch_size`` distinct scenes.

Stage 1 of the shipped weights (2 CPU cores, see README "Shapes world")::

    OMP_NUM_THREADS=1 python tools/train_tiny_clip.py

which runs this config with ``tools/train.py``'s engine, then exports fp16 weights to
``output/tiny_clip_shapes/ovdense-tiny-vit_shapes.pt`` and reports zero-shot accuracy.
Stage 2 (``tiny_clip_shapes_background.py``: captions that name the background) continues from
that file and gives the shipped weights (``--update-bundled`` replaces the shipped
``ovdense/assets/weights/ovdense-tiny-vit_shapes.pt``).
"""

import torch

from ovdense.config import LazyCall as L
from ovdense.data.synthetic import ShapesCaptionDataset
from ovdense.engine import WarmupCosine
from ovdense.modeling.clip import load_clip
from ovdense.modeling.contrastive import ContrastiveCLIP

_MAX_ITER = 2000
_BATCH = 128

model = L(ContrastiveCLIP)(clip=L(load_clip)(model_name="ovdense-tiny-vit"))

dataloader = dict(
    dataset=L(ShapesCaptionDataset)(length=_MAX_ITER * _BATCH, seed=0, size=64, split="train"),
    batch_size=_BATCH,
    num_workers=1,
    shuffle=True,
    drop_last=True,
)

optimizer = L(torch.optim.AdamW)(lr=5e-4, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6)

lr_scheduler = L(WarmupCosine)(max_iter=_MAX_ITER, warmup_iters=100, warmup_factor=0.01)

train = dict(
    max_iter=_MAX_ITER,
    log_period=20,
    checkpoint_period=250,
    output_dir="output/tiny_clip_shapes",
    seed=0,
    device="cpu",
)
