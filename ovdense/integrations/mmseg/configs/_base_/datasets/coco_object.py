# COCO 2017 val, 80 things + background (*_instanceTrainIds.png).
# ovdense's layout under one data root (docs/protocols.md#benchmarks); the shared
# test pipeline and dataloader are in ../test_loader.py.
_base_ = ["../test_loader.py"]
dataset_subdir = "coco_stuff164k"  # under the data root (tools/mmseg_test.py --data-root)
test_dataloader = dict(
    dataset=dict(
        type="OVDenseCOCOObjectDataset",
        data_root="data/coco_stuff164k",
        data_prefix=dict(img_path="images/val2017", seg_map_path="annotations/val2017"),
    ),
)
