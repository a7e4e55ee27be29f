"""CorrCLIP (``corrclip_vitb16``) with segment-anything's automatic masks instead of SAM 2's (no
optional package): SAM ViT-H with the same loose generator settings as CorrCLIP's SAM 2 (8
points per side, predicted-IoU and stability thresholds 0.4). Not a setting of the paper.
Needs ``model.mask_source.checkpoint=/path/sam_vit_h_4b8939.pth``.
"""

from ovdense.config import LazyCall as L
from ovdense.sam.instances import MaskGeneratorOptions
from ovdense.sam.mask_source import build_mask_source

from .corrclip_vitb16 import model

model.mask_source = L(build_mask_source)(
    name="sam",
    cache_dir=None,
    kind="vit_h",
    checkpoint=None,
    device="cpu",
    options=L(MaskGeneratorOptions)(
        points_per_side=8, pred_iou_thresh=0.4, stability_score_thresh=0.4
    ),
)
