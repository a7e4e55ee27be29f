"""Trident (Shi et al., ICCV 2025) on CLIP ViT-B/16: splice-then-segment.

Every 336 x 336 window (stride 224) of the image (short side 448, rounded to whole patches)
runs CLIP with ProxyCLIP-style attention from DINO ViT-B/16 (its last-block output tokens after
the final norm; β 1.2, γ 3.0, the similarity mean taken over all windows of the image at once);
the windows' last-block tokens are spliced into one map, mixed over the whole image by the
attention of SAM ViT-B's last image-encoder block (``sam_affinity``: cos_fac 1.2), then
projected and classified (logit scale 40); SAM refinement of the result (``SAMRefiner``:
coarse threshold 0.2, IoU 0.8, minimal area 225), as the official evaluation script runs it
(``dist_test.sh`` passes ``--sam_refine``). Settings of the official ``configs/base_config.py``;
per-benchmark ones in ``eval/trident.py``. The official code runs CLIP, DINO and the SAM encoder
in fp16 on GPU (``precision="auto"``: fp16 on GPU, fp32 on CPU).

Weights you must give (offline): the SAM ViT-B file for both SAM parts,
``model.aggregator_kwargs.checkpoint=/path/sam_vit_b_01ec64.pth
model.post_refiner.checkpoint=/path/sam_vit_b_01ec64.pth`` (download:
https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth); DINO comes from the
Hugging Face hub (timm ``vit_base_patch16_224.dino``) or
``model.strategy_kwargs.vfm_kwargs.checkpoint=/path/dino_vitbase16_pretrain.pth``. Without the
refinement: ``model.post_refiner=None``.
"""

from ovdense.config import LazyCall as L
from ovdense.sam.refine import SAMRefiner

from .base_training_free import model

model.strategy = "proxy"
model.strategy_kwargs = {
    "vfm": "dino_vitb16",
    "beta": 1.2,
    "gamma": 3.0,
    # Trident batches all windows of an image and takes one torch.mean over the batch
    "mean_over": "batch",
    # DINO's get_intermediate_layers(x)[0]: the last block's output after the final norm
    "vfm_kwargs": {"checkpoint": None, "feature": "tokens"},
}
model.pos_interp = "scale_factor"
model.short_side = 448
model.window = 336
model.stride = 224
model.logit_scale = 40.0
model.precision = "auto"
model.aggregator = "sam_affinity"
model.aggregator_kwargs = {
    "sam": "vit_b",
    "checkpoint": None,
    "cos_fac": 1.2,
    "refine_neg_cos": True,
    "columns": 1,
    "rounding": "floor",
}
model.post_refiner = L(SAMRefiner)(
    kind="vit_b",
    checkpoint=None,
    coarse_thresh=0.2,
    minimal_area=225,
    iou_thresh=0.8,
    mask_coeff=0.005,
)
