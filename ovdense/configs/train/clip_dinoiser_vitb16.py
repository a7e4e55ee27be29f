"""CLIP-DINOiser head training (Wysoczańska et al., ECCV 2024; docs/methods.md#training-the-heads):
the paper's recipe.

Frozen OpenCLIP ViT-B/16 (laion2b_s34b_b88k) and DINO ViT-B/16; only the correlation conv
(``obj_proj``, 3x3, 768 -> 256) and the background conv (``bkg_decoder``, 1x1) train.
1000 ImageNet images at 448 px (long side resized to 448, padded to a square; padded cells are
left out of the losses), batch 16, AdamW, lr 5e-5 (``obj_proj``) and 1e-2 (``bkg_decoder``),
both x0.1 at iteration 5000. Losses: BCE-with-logits of the clamped student correlations
against DINO value correlations >= 0.2, and of the background logits against FOUND saliency.

Length: the paper gives the LR step (5000) but not the total; we train ``max_iter = 6000``
(5000 iterations + 1000 at the decayed rate, i.e. 96 epochs of 1000 images / batch 16).

FOUND target: the training-free FOUND discovery (:mod:`ovdense.modeling.refiners.found`) on the
DINO ViT-B/16 teacher's own last block (``model.found=None``: one DINO pass gives values, keys
and CLS attention). The official code uses FOUND's released model (DINO ViT-S/8 + its trained
1x1 decoder); to use it::

    model.found=L(FOUNDSaliency)(vfm=L(build_vfm)(name="dino_vits8"),
                                 decoder_checkpoint="/path/decoder_weights.pt")

Run (any folder of images, e.g. 1000 ImageNet train images)::

    python tools/train.py --config ovdense/configs/train/clip_dinoiser_vitb16.py \\
        dataloader.dataset.root=/data/imagenet_1k_subset

Then use the head (either the trainer checkpoint directly, or the release format)::

    python tools/eval_seg.py --config clip_dinoiser \\
        model.head_checkpoint=output/clip_dinoiser_vitb16/model_0006000.pt ...
    trainer.model.save_official_checkpoint("last.pt", epoch=...)   # or
    python tools/export_clip_dinoiser.py output/clip_dinoiser_vitb16 last.pt
"""

import torch

from ovdense.config import LazyCall as L
from ovdense.data.images import ImageFolderDataset
from ovdense.engine import WarmupStep
from ovdense.modeling.backbones.vfm import build_vfm
from ovdense.modeling.clip import load_clip
from ovdense.modeling.distill import CLIPDINOiserDistill

_MAX_ITER = 6000
_SIZE = 448

model = L(CLIPDINOiserDistill)(
    clip=L(load_clip)(model_name="ViT-B-16", pretrained="laion2b_s34b_b88k"),
    teacher=L(build_vfm)(name="dino_vitb16", feature="value"),
    found=None,  # FOUND on the teacher's last block (see the module doc)
    proj_dim=256,
    gamma=0.2,
    feature_block=-3,
    corr_lr=5e-5,
    bkg_lr=1e-2,
    saliency_threshold=0.5,
)

dataloader = dict(
    dataset=L(ImageFolderDataset)(root="datasets/imagenet_1k_subset", image_size=_SIZE),
    batch_size=16,
    num_workers=4,
    shuffle=True,
    drop_last=True,
)

# The per-head learning rates come from model.param_groups() (corr_lr / bkg_lr); lr here is
# only the default of a group without one. AdamW's default weight decay (0.01) is kept.
optimizer = L(torch.optim.AdamW)(lr=5e-5)

lr_scheduler = L(WarmupStep)(steps=[5000], gamma=0.1, warmup_iters=0)

train = dict(
    max_iter=_MAX_ITER,
    grad_accum=1,
    amp=False,
    clip_grad=None,
    log_period=20,
    checkpoint_period=1000,
    output_dir="output/clip_dinoiser_vitb16",
    seed=0,
)
