# CLIP-DINOiser (ovdense preset "clip_dinoiser") on coco_object, paper protocol: the settings of
# ovdense/configs/eval/clip_dinoiser.py for this benchmark and its class-name rule.
# Weights: its trained head, model.overrides=['model.head_checkpoint=/path/last.pt'].
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/coco_object.py"]
model = dict(
    type="OVDenseSegmentor", preset="clip_dinoiser", benchmark="coco_object", protocol="paper"
)
