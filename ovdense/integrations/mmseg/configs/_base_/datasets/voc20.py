# PASCAL VOC 2012 val, 20 classes, background not scored.
# ovdense's layout under one data root (docs/protocols.md#benchmarks); the shared
# test pipeline and dataloader are in ../test_loader.py.
_base_ = ["../test_loader.py"]
dataset_subdir = "VOCdevkit/VOC2012"  # under the data root (tools/mmseg_test.py --data-root)
test_dataloader = dict(
    dataset=dict(
        type="OVDensePascalVOC20Dataset",
        data_root="data/VOCdevkit/VOC2012",
        data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"),
        ann_file="ImageSets/Segmentation/val.txt",
    ),
)
