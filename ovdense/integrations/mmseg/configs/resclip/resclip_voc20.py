# ResCLIP (ovdense preset "resclip") on voc20, paper protocol: the settings of
# ovdense/configs/eval/resclip.py for this benchmark and its class-name rule.
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/voc20.py"]
model = dict(type="OVDenseSegmentor", preset="resclip", benchmark="voc20", protocol="paper")
