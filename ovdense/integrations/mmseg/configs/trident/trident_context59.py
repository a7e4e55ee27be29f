# Trident (ovdense preset "trident") on context59, paper protocol: the settings of
# ovdense/configs/eval/trident.py for this benchmark and its class-name rule.
# Weights: the SAM ViT-B file for its aggregation and refinement, model.overrides=[
# 'model.aggregator_kwargs.checkpoint=/path/sam_vit_b_01ec64.pth',
# 'model.post_refiner.checkpoint=/path/sam_vit_b_01ec64.pth'] (or model.post_refiner=None).
_base_ = ["../_base_/default_runtime.py", "../_base_/datasets/context59.py"]
model = dict(type="OVDenseSegmentor", preset="trident", benchmark="context59", protocol="paper")
