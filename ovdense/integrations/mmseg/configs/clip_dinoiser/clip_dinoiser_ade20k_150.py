# CLIP-DINOiser (ovdense preset "clip_dinoiser") on ade20k_150, paper protocol: the settings of
# ovdense/configs/eval/clip_dinoiser.py for this benchmark and its class-name rule.
# Weights: its trained head, model.overrides=['model.head_checkpoint=/path/last.pt'].
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/ade20k_150.py"]
model = dict(
    type="OVDenseSegmentor", preset="clip_dinoiser", benchmark="ade20k_150", protocol="paper"
)
