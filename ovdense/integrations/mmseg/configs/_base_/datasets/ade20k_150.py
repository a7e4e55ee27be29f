# ADE20K val, 150 classes.
# ovdense's layout under one data root (docs/protocols.md#benchmarks).
# No Resize: ovdense resizes to the preset's short side itself (see OVDenseSegmentor).
dataset_subdir = "ADEChallengeData2016"  # under the data root (tools/mmseg_test.py --data-root)
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
        type="ADE20KDataset",
        data_root="data/ADEChallengeData2016",
        data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
        pipeline=test_pipeline,
    ),
)
