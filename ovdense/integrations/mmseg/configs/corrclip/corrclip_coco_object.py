# CorrCLIP (ovdense preset "corrclip") on coco_object, paper protocol: the settings of
# ovdense/configs/eval/corrclip.py for this benchmark and its class-name rule.
# Region maps: the SAM 2 masks of each image generated beforehand (CorrCLIP's
# data/region_masks layout) with model.region_dir=DIR, or computed by the preset's SAM 2
# source with model.overrides=['model.mask_source.checkpoint=/path/sam2_hiera_large.pt'].
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/coco_object.py"]
model = dict(type="OVDenseSegmentor", preset="corrclip", benchmark="coco_object", protocol="paper")
