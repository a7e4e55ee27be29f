# PASCAL Context val, 59 classes + background.
# ovdense's layout under one data root (docs/protocols.md#benchmarks); the shared
# test pipeline and dataloader are in ../test_loader.py.
_base_ = ["../test_loader.py"]
dataset_subdir = "VOCdevkit/VOC2010"  # under the data root (tools/mmseg_test.py --data-root)
test_dataloader = dict(
    dataset=dict(
        type="PascalContextDataset",
        data_root="data/VOCdevkit/VOC2010",
        data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClassContext"),
        ann_file="ImageSets/SegmentationContext/val.txt",
    ),
)
