# SC-CLIP (ovdense preset "scclip") on voc21, paper protocol: the settings of
# ovdense/configs/eval/scclip.py for this benchmark and its class-name rule.
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/voc21.py"]
model = dict(type="OVDenseSegmentor", preset="scclip", benchmark="voc21", protocol="paper")
