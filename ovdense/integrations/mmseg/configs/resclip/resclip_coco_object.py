# ResCLIP (ovdense preset "resclip") on coco_object, paper protocol: the settings of
# ovdense/configs/eval/resclip.py for this benchmark and its class-name rule.
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/coco_object.py"]
model = dict(type="OVDenseSegmentor", preset="resclip", benchmark="coco_object", protocol="paper")
