# SC-CLIP (ovdense preset "scclip") on coco_stuff171, paper protocol: the settings of
# ovdense/configs/eval/scclip.py for this benchmark and its class-name rule.
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/coco_stuff171.py"]
model = dict(type="OVDenseSegmentor", preset="scclip", benchmark="coco_stuff171", protocol="paper")
