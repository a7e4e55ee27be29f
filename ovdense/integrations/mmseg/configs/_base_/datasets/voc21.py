# PASCAL VOC 2012 val, 20 classes + background.
# ovdense's layout under one data root (docs/protocols.md#benchmarks).
# No Resize: ovdense resizes to the preset's short side itself (see OVDenseSegmentor).
dataset_subdir = "VOCdevkit/VOC2012"  # under the data root (tools/mmseg_test.py --data-root)
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
        type="PascalVOCDataset",
        data_root="data/VOCdevkit/VOC2012",
        data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"),
        ann_file="ImageSets/Segmentation/val.txt",
        pipeline=test_pipeline,
    ),
)
