# PASCAL Context val, 59 classes + background.
# ovdense's layout under one data root (docs/protocols.md#benchmarks).
# No Resize: ovdense resizes to the preset's short side itself (see OVDenseSegmentor).
dataset_subdir = "VOCdevkit/VOC2010"  # under the data root (tools/mmseg_test.py --data-root)
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type="PascalContextDataset",
        data_root="data/VOCdevkit/VOC2010",
        data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClassContext"),
        ann_file="ImageSets/SegmentationContext/val.txt",
        pipeline=test_pipeline,
    ),
)
