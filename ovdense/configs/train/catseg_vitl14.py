"""CAT-Seg (Cho et al., CVPR 2024) on CLIP ViT-L/14 at 336 (OpenAI weights): the official recipe
(``configs/vitl_336.yaml`` of KU-CVLAB/CAT-Seg), trained on COCO-Stuff 164k.

The ViT-B/16 recipe (:mod:`train/catseg_vitb16 <ovdense.configs.train.catseg_vitb16>`) with
CLIP ViT-L/14-336: 384 x 384 crops resized to 336 for CLIP (a 24 x 24 grid), joint dim 768,
decoder guidance from blocks 7 and 15 (of 24, width 1024). Same head, data, loss and solver.

Run::

    torchrun --nproc-per-node 4 -m ovdense train --config configs/train/catseg_vitl14.py \\
        dataloader.batch_size=1

Evaluate::

    ovdense eval-all --config seg/catseg_vitl14 \\
        --datasets ade20k_847 context459 ade20k_150 context59 voc20 \\
        model.checkpoint=output/catseg_vitl14/model_0080000.pt
"""

from ovdense.modeling.clip import load_clip

from .catseg_vitb16 import L, dataloader, lr_scheduler, model, optimizer, train

model.clip = L(load_clip)(model_name="ViT-L-14-336", pretrained="openai")
model.image_size = 336
train.output_dir = "output/catseg_vitl14"

__all__ = ["dataloader", "lr_scheduler", "model", "optimizer", "train"]
