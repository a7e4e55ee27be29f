# CorrCLIP (ovdense preset "corrclip") on context60, paper protocol: the settings of
# ovdense/configs/eval/corrclip.py for this benchmark and its class-name rule.
# Region maps: the SAM 2 masks of each image generated beforehand (CorrCLIP's
# data/region_masks layout) with model.region_dir=DIR, or computed by the preset's SAM 2
# source with model.overrides=['model.mask_source.checkpoint=/path/sam2_hiera_large.pt'].
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/context60.py"]
model = dict(type="OVDenseSegmentor", preset="corrclip", benchmark="context60", protocol="paper")
