# CLIP-DINOiser (ovdense preset "clip_dinoiser") on voc21, paper protocol: the settings of
# ovdense/configs/eval/clip_dinoiser.py for this benchmark and its class-name rule.
# Weights: its trained head, model.overrides=['model.head_checkpoint=/path/last.pt'].
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/voc21.py"]
model = dict(type="OVDenseSegmentor", preset="clip_dinoiser", benchmark="voc21", protocol="paper")
