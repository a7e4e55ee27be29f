# SC-CLIP (ovdense preset "scclip") on ade20k_150, paper protocol: the settings of
# ovdense/configs/eval/scclip.py for this benchmark and its class-name rule.
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/ade20k_150.py"]
model = dict(type="OVDenseSegmentor", preset="scclip", benchmark="ade20k_150", protocol="paper")
