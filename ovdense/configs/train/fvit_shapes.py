"""F-ViT open-vocabulary detector on the shapes world's tiny CLIP: train on the seen
colour-shape compositions, detect all 30 (held-out ones = novel) on ``shapes_det``.

The offline analogue of OV-COCO (see README "Open-vocabulary detection"). The bundled tiny
CLIP (``ovdense-tiny-vit``, tag ``shapes``) is frozen; the pyramid, RPN and RoI heads train on
shapes scenes of the ``train`` split (held-out compositions never drawn) at 128 px, with the 24
seen compositions as the training vocabulary. Sizes are scaled down from F-ViT's (three pyramid
levels of 64 channels, no RoI convolutions, fewer sampled anchors / RoIs) to train on a CPU::

    ovdense train --config train/fvit_shapes --output output/fvit_shapes
    ovdense eval-det --config train/fvit_shapes --checkpoint output/fvit_shapes --dataset shapes_det
"""

import torch

from ovdense.config import LazyCall as L
from ovdense.data import synthetic
from ovdense.data.detection import ShapesDetection
from ovdense.engine import WarmupCosine
from ovdense.modeling.clip import load_clip
from ovdense.modeling.detection import build_fvit

_MAX_ITER = 400
_BATCH = 4
_NAMES = synthetic.class_names()
SEEN = [_NAMES[i] for i in synthetic.class_groups()["seen"]]

model = L(build_fvit)(
    clip=L(load_clip)(model_name="ovdense-tiny-vit", pretrained="shapes"),
    train_classes=SEEN,
    strategy="maskclip",
    templates="shapes",
    scales=(2.0, 1.0, 0.5),
    pyramid_channels=64,
    min_size=128,
    max_size=128,
    box_convs=0,
    box_fc_dim=256,
    rpn_batch_size_per_image=128,
    rpn_pre_nms_top_n=(600, 300),
    rpn_post_nms_top_n=(300, 100),
    roi_batch_size_per_image=128,
    learn_background=True,
)

dataloader = dict(
    dataset=L(ShapesDetection)(
        length=_MAX_ITER * _BATCH, seed=0, size=128, split="train", classes=SEEN
    ),
    batch_size=_BATCH,
    num_workers=0,
    shuffle=True,
    drop_last=True,
    collate_fn="ovdense.data.detection.detection_collate",
)

optimizer = L(torch.optim.AdamW)(lr=1e-3, weight_decay=0.1)

lr_scheduler = L(WarmupCosine)(max_iter=_MAX_ITER, warmup_iters=50, warmup_factor=0.01)

train = dict(
    max_iter=_MAX_ITER,
    clip_grad=1.0,
    log_period=20,
    checkpoint_period=100,
    output_dir="output/fvit_shapes",
    seed=0,
    device="cpu",
)
