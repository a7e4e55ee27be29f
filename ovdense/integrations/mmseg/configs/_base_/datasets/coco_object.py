# COCO 2017 val, 80 things + background (*_instanceTrainIds.png).
# ovdense's layout under one data root (docs/protocols.md#benchmarks).
# No Resize: ovdense resizes to the preset's short side itself (see OVDenseSegmentor).
dataset_subdir = "coco_stuff164k"  # under the data root (tools/mmseg_test.py --data-root)
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
        type="OVDenseCOCOObjectDataset",
        data_root="data/coco_stuff164k",
        data_prefix=dict(img_path="images/val2017", seg_map_path="annotations/val2017"),
        pipeline=test_pipeline,
    ),
)
