"""F-ViT on the shapes world, as a detectron2 LazyConfig (trains in minutes on a CPU).

The detectron2 twin of ovdense's ``configs/train/fvit_shapes.py``: the bundled tiny CLIP
(``ovdense-tiny-vit``, tag ``shapes``, patch 8) frozen, three pyramid levels of 64 channels
(scales 2, 1, 0.5 -> strides 4, 8, 16, plus the pooled 32), a two-conv RPN, a 2-fc box head
without convolutions, the text classifier over the 24 seen compositions; evaluated on
``ovdense_shapes_det_val`` with all 30 (the 6 held-out ones novel), F-ViT's CLIP ensemble on.
Trained on ``ovdense_shapes_det_train`` (1600 scenes of the training distribution, generated
on first use)::

    python tools/d2_train.py --config-file fvit_shapes
    python tools/d2_train.py --config-file fvit_shapes --eval-only \\
        train.init_checkpoint=output/d2_fvit_shapes/model_final.pth
"""

from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from detectron2.modeling import GeneralizedRCNN
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler

from ovdense.data import synthetic
from ovdense.integrations.detectron2 import (
    OVDenseCLIPBackbone,
    OVDenseDetectionEvaluator,
    encode_vocabulary,
)
from ovdense.integrations.detectron2.lazy_parts import (
    fvit_adamw,
    fvit_roi_heads,
    fvit_rpn,
    fvit_test_loader,
)
from ovdense.modeling.backbones.tower import OPENAI_MEAN, OPENAI_STD
from ovdense.modeling.clip import load_clip

_NAMES = synthetic.class_names()
_SEEN = [_NAMES[i] for i in synthetic.class_groups()["seen"]]
_ALL = _NAMES[1:]
_MAX_ITER = 400
_SIZE = 128
_CLIP = L(load_clip)(model_name="ovdense-tiny-vit", pretrained="shapes")
_TEMPLATES = "shapes"

model = L(GeneralizedRCNN)(
    backbone=L(OVDenseCLIPBackbone)(
        clip=_CLIP,
        strategy="maskclip",
        scales=(2.0, 1.0, 0.5),
        out_channels=64,
        norm=True,
        dense_feature="clip_dense",
    ),
    proposal_generator=fvit_rpn(
        strides=[4, 8, 16, 32],
        channels=64,
        batch_size_per_image=128,
        pre_nms_topk=(600, 300),
        post_nms_topk=(300, 100),
    ),
    roi_heads=fvit_roi_heads(
        clip=_CLIP,
        train_classes=_SEEN,
        templates=_TEMPLATES,
        strides=[4, 8, 16],
        channels=64,
        conv_dims=[],
        fc_dims=[256, 256],
        batch_size_per_image=128,
        learn_background=True,
        clip_stride=8,
    ),
    pixel_mean=[255.0 * m for m in OPENAI_MEAN],
    pixel_std=[255.0 * s for s in OPENAI_STD],
    input_format="RGB",
)

# the vocabulary detected at evaluation: all 30 compositions, the held-out ones novel
test_vocabulary = dict(
    class_embeds=L(encode_vocabulary)(clip=_CLIP, names=_ALL, templates=_TEMPLATES),
    is_base=[name in _SEEN for name in _ALL],
)

dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="ovdense_shapes_det_train"),
        mapper=L(DatasetMapper)(
            is_train=True,
            augmentations=[L(T.ResizeShortestEdge)(short_edge_length=_SIZE, max_size=_SIZE)],
            image_format="RGB",
        ),
        total_batch_size=4,
        num_workers=0,
    ),
    test=fvit_test_loader("ovdense_shapes_det_val", size=_SIZE, num_workers=0),
    evaluator=L(OVDenseDetectionEvaluator)(dataset_name="${..test.dataset.names}"),
)

optimizer = fvit_adamw(lr=1e-3)

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.0),
    warmup_length=50 / _MAX_ITER,
    warmup_factor=0.01,
)

train = dict(
    output_dir="output/d2_fvit_shapes",
    init_checkpoint="",
    max_iter=_MAX_ITER,
    amp=dict(enabled=False),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=100, max_to_keep=2),
    eval_period=_MAX_ITER,
    log_period=20,
    clip_grad=1.0,
    device="cpu",
    seed=0,
)
