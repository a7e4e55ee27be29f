"""CorrCLIP (Zhang et al., ICCV 2025) with its repository's default CLIP, MetaCLIP ViT-B/16
(open_clip ``ViT-B-16-quickgelu``, tag ``metaclip_fullcc``; the paper's OpenAI-CLIP figure is
48.7): CLIP's last block attends within class-agnostic masks with DINO ViT-B/8 affinities
(query + key of its last block, τ = 4), mask merging (DBSCAN ε 0.2), spatial branch (mean of
blocks 5-9, α = 1) and semantic branch (per-mask class tokens, β = 0.5), dense map on the DINO
grid; the final labels are corrected by a vote in each mask (``label_refiner="region_vote"``).
Short side 336, 336/112 windows, logit scale 40, position embeddings interpolated with the
``(g + 0.1) / g0`` scale factor; the official code runs in fp16 on GPU (``precision="auto"``).

Masks: SAM 2 Hiera-L automatic masks with the official generator settings (8 points per side,
predicted-IoU and stability thresholds 0.4, one mask per point, no post-processing). They need
the optional ``sam2`` package (``pip install "ovdense[sam2]"``) and
``model.mask_source.checkpoint=/path/sam2_hiera_large.pt``; ``model.mask_source.cache_dir=DIR``
keeps them on disk (computed once per image). The paper's tables use masks pre-generated with
32 points per side (README row SAM2_32, 51.0; the 8-point row reads 50.4). With
segment-anything instead: ``corrclip_vitb16_sam``.

DINO weights: timm ``vit_base_patch8_224.dino`` from the Hugging Face hub, or offline
``model.strategy_kwargs.vfm_kwargs.checkpoint=/path/dino_vitbase8_pretrain.pth``.
"""

from ovdense.config import LazyCall as L
from ovdense.modeling.clip import load_clip
from ovdense.sam.mask_source import build_mask_source

from .base_training_free import model

model.clip = L(load_clip)(model_name="ViT-B-16-quickgelu", pretrained="metaclip_fullcc")
model.strategy = "corrclip"
model.strategy_kwargs = {
    "vfm": "dino_vitb8",
    "vfm_kwargs": {"checkpoint": None, "feature": "query_key"},
    "tau": 4.0,
    "alpha": 1.0,
    "beta": 0.5,
    "merge_eps": 0.2,
}
model.pos_interp = "scale_factor"
model.short_side = 336
model.window = 336
model.stride = 112
model.logit_scale = 40.0
model.precision = "auto"
model.mask_source = L(build_mask_source)(
    name="sam2",
    cache_dir=None,
    config="sam2_hiera_l.yaml",
    checkpoint=None,
    device="cpu",
    points_per_side=8,
    pred_iou_thresh=0.4,
    stability_score_thresh=0.4,
    multimask_output=False,
    apply_postprocessing=False,
)
model.label_refiner = "region_vote"
