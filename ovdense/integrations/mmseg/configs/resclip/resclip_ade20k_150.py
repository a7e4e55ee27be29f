# ResCLIP (ovdense preset "resclip") on ade20k_150, paper protocol: the settings of
# ovdense/configs/eval/resclip.py for this benchmark and its class-name rule.
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/ade20k_150.py"]
model = dict(type="OVDenseSegmentor", preset="resclip", benchmark="ade20k_150", protocol="paper")
