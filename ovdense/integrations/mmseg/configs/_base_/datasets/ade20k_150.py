# ADE20K val, 150 classes.
# ovdense's layout under one data root (docs/protocols.md#benchmarks); the shared
# test pipeline and dataloader are in ../test_loader.py.
_base_ = ["../test_loader.py"]
dataset_subdir = "ADEChallengeData2016"  # under the data root (tools/mmseg_test.py --data-root)
test_dataloader = dict(
    dataset=dict(
        type="ADE20KDataset",
        data_root="data/ADEChallengeData2016",
        data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
    ),
)
