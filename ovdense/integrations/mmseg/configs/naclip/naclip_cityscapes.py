# NACLIP (ovdense preset "naclip") on cityscapes, paper protocol: the settings of
# ovdense/configs/eval/naclip.py for this benchmark and its class-name rule.
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/cityscapes.py"]
model = dict(type="OVDenseSegmentor", preset="naclip", benchmark="cityscapes", protocol="paper")
