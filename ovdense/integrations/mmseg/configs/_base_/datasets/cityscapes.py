# Cityscapes val, 19 classes.
# ovdense's layout under one data root (docs/protocols.md#benchmarks).
# No Resize: ovdense resizes to the preset's short side itself (see OVDenseSegmentor).
dataset_subdir = "cityscapes"  # under the data root (tools/mmseg_test.py --data-root)
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
        type="CityscapesDataset",
        data_root="data/cityscapes",
        data_prefix=dict(img_path="leftImg8bit/val", seg_map_path="gtFine/val"),
        pipeline=test_pipeline,
    ),
)
