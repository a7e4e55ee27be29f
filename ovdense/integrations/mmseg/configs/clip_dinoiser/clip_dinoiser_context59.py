# CLIP-DINOiser (ovdense preset "clip_dinoiser") on context59, paper protocol: the settings of
# ovdense/configs/eval/clip_dinoiser.py for this benchmark and its class-name rule.
# Weights: its trained head, model.overrides=['model.head_checkpoint=/path/last.pt'].
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/context59.py"]
model = dict(
    type="OVDenseSegmentor", preset="clip_dinoiser", benchmark="context59", protocol="paper"
)
