# ovdense in mmseg: the test pipeline and dataloader every _base_/datasets/<benchmark>.py shares;
# a dataset config sets `dataset_subdir` and the dataset's type, root, prefixes and split file.
# No Resize: ovdense resizes to the preset's short side itself (see OVDenseSegmentor).
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
    dataset=dict(pipeline=test_pipeline),
)
