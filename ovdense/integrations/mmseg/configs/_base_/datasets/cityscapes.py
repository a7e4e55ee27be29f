# Cityscapes val, 19 classes.
# ovdense's layout under one data root (docs/protocols.md#benchmarks); the shared
# test pipeline and dataloader are in ../test_loader.py.
_base_ = ["../test_loader.py"]
dataset_subdir = "cityscapes"  # under the data root (tools/mmseg_test.py --data-root)
test_dataloader = dict(
    dataset=dict(
        type="CityscapesDataset",
        data_root="data/cityscapes",
        data_prefix=dict(img_path="leftImg8bit/val", seg_map_path="gtFine/val"),
    ),
)
