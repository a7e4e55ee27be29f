"""SC-CLIP (Bai et al., 2024) on CLIP ViT-B/16: anomaly tokens (LOF, k 30, 5 %) resolved before the
last block, its attention re-calibrated by block 9's patch similarity (β 0.4), output aggregated
by block 4's, blocks 4-10 fused, CLS weight 0.3; short side 336, 224/112 windows, logit scale 40,
no PAMR."""

from .base_training_free import model

model.strategy = "scclip"
model.strategy_kwargs = {
    "pre_adjust_idx": 8,
    "post_adjust_idx": 3,
    "multi_start_idx": 3,
    "multi_end_idx": 10,
    "res_cls": 0.3,
    "beta": 0.4,
    "gamma": 3.0,
    "lof_neighbors": 30,
    "lof_contamination": 0.05,
}
model.pos_interp = "scale_factor"
model.short_side = 336
model.window = 224
model.stride = 112
model.logit_scale = 40.0
model.pamr = None
