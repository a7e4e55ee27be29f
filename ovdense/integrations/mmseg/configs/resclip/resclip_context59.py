# ResCLIP (ovdense preset "resclip") on context59, paper protocol: the settings of
# ovdense/configs/eval/resclip.py for this benchmark and its class-name rule.
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/context59.py"]
model = dict(type="OVDenseSegmentor", preset="resclip", benchmark="context59", protocol="paper")
