"""CAT-Seg's head on the shapes world (a test/demo asset): the cost-aggregation head trained on
CPU on top of the bundled tiny CLIP (``ovdense-tiny-vit``, tag ``shapes``), CLIP's query and
value projections fine-tuned as in the paper.

Training data: :class:`~ovdense.data.synthetic.ShapesSegDataset`, world seed 2 (the tiny CLIP
was trained on seed 0, the ``shapes_seg`` validation set is seed 1), 64 px scenes of the
*training* distribution: the six held-out compositions are never drawn, and the vocabulary is
background + the 24 seen compositions only (:func:`~ovdense.data.synthetic.train_class_names`),
so a held-out name is never a label nor a negative. Every scene is seen once
(``max_iter * batch_size`` distinct scenes).

Head: the official one scaled down (hidden 32, guidance 16, decoder (16, 16), Swin windows 4 on
the tiny CLIP's 8 x 8 grid, decoder guidance from blocks 1 and 3 of 6, pad length 32; 164 k
parameters), the shapes world's three caption templates. Solver: AdamW lr 1e-3 (CLIP 1e-5),
weight decay 1e-4, 30 warmup iterations then cosine, gradient-norm clipping at 1.0 (the
official 0.01 is for 80k iterations), batch 8, 600 iterations (4,800 scenes). One torch thread:
on a shared 2-core machine OpenMP threads spin-waiting on each other made two threads up to 10x
slower (README "Shapes world": 30 min there, about 7 min on a free machine).

Run, then evaluate next to the training-free strategies (README "Shapes world")::

    OMP_NUM_THREADS=1 ovdense train --config configs/train/catseg_shapes.py
    python tools/eval_shapes.py --catseg-checkpoint output/catseg_shapes/model_0000600.pt
    # or its row only:
    ovdense eval-all --config shapes/catseg --datasets shapes_seg shapes_seg_objects \\
        model.checkpoint=output/catseg_shapes/model_0000600.pt
"""

import torch

from ovdense.config import LazyCall as L
from ovdense.data.synthetic import ShapesSegDataset, train_class_names
from ovdense.engine import WarmupCosine
from ovdense.modeling.clip import load_clip
from ovdense.modeling.segmentors import CATSegModel

_MAX_ITER = 600
_BATCH = 8

#: the head's sizes, shared with the ``shapes/catseg`` preset
HEAD = dict(
    num_layers=2,
    hidden_dim=32,
    num_heads=4,
    window_size=4,
    pool_size=2,
    eval_pool_size=1,
    pad_len=32,
    guidance_dim=16,
    decoder_dims=(16, 16),
    decoder_guidance_dims=(16, 16),
    decoder_guidance_proj_dims=(8, 4),
    class_chunk=None,
    # trained before the head read the unnormalised features (the official guidance input):
    # kept so, the README's shapes-world figures were measured with it
    raw_features=False,
)

model = L(CATSegModel)(
    clip=L(load_clip)(model_name="ovdense-tiny-vit", pretrained="shapes"),
    class_names=L(train_class_names)(),
    head_kwargs=HEAD,
    templates="shapes",
    finetune="qv",
    clip_lr=1e-5,
    clip_weight_decay=0.0,
    image_size=None,
    ignore_label=255,
)

dataloader = dict(
    dataset=L(ShapesSegDataset)(length=_MAX_ITER * _BATCH, seed=2, size=64),
    batch_size=_BATCH,
    num_workers=0,
    shuffle=True,
    drop_last=True,
)

optimizer = L(torch.optim.AdamW)(lr=1e-3, weight_decay=1e-4)

lr_scheduler = L(WarmupCosine)(max_iter=_MAX_ITER, warmup_iters=30, warmup_factor=0.01)

train = dict(
    max_iter=_MAX_ITER,
    grad_accum=1,
    amp=False,
    clip_grad=1.0,
    log_period=50,
    checkpoint_period=200,
    output_dir="output/catseg_shapes",
    seed=0,
    device="cpu",
)
