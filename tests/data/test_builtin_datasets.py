"""Built-in datasets on tiny synthetic layouts: ids, images and labels in the eval convention."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdense.data import DatasetFileError, build_semseg_dataset, get_metadata

H, W = 6, 8


def _image(path: Path, seed: int, size: tuple[int, int] = (H, W), fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)


def _label(path: Path, arr: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.dtype == np.uint16:
        Image.fromarray(arr).save(path)  # 16-bit gray PNG / TIFF
        return
    im = Image.fromarray(arr.astype(np.uint8))
    if palette:
        # VOC-style palette PNG whose colours differ from the indices.
        im.putpalette(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tolist())
        assert im.mode == "P"
    im.save(path)


def _label_map(values: list[int], dtype=np.uint8) -> np.ndarray:
    """An ``[H, W]`` map whose first pixels are ``values`` (the rest repeats the first)."""
    arr = np.full(H * W, values[0], dtype=np.int64)
    arr[: len(values)] = values
    return arr.reshape(H, W).astype(dtype)


# -- VOC ----------------------------------------------------------------------------------------


def _voc(root: Path, labels: dict[str, list[int]]) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    split = voc / "ImageSets" / "Segmentation" / "val.txt"
    split.parent.mkdir(parents=True)
    split.write_text("\n".join(reversed(list(labels))) + "\n\n")
    for i, (sid, values) in enumerate(labels.items()):
        _image(voc / "JPEGImages" / f"{sid}.jpg", i)
        _label(voc / "SegmentationClass" / f"{sid}.png", _label_map(values), palette=True)
    return voc


def test_voc21_palette_indices_and_ids(tmp_path):
    _voc(tmp_path, {"2007_000033": [0, 1, 20, 255], "2007_000042": [15, 3]})
    data = build_semseg_dataset("voc21", tmp_path)
    assert [s.id for s in data.samples] == ["2007_000033", "2007_000042"]  # sorted
    assert len(data) == 2 and data.metadata.name == "voc21"
    item = data[0]
    assert item["id"] == "2007_000033"
    assert item["image"].dtype == np.uint8 and item["image"].shape == (H, W, 3)
    expected = np.array(Image.open(item["image_path"]).convert("RGB"))
    np.testing.assert_array_equal(item["image"], expected)
    lab = item["label"]
    assert lab.dtype == np.int64 and lab.shape == (H, W)
    assert lab.ravel()[:4].tolist() == [0, 1, 20, 255]  # indices, not palette colours
    assert item["label_path"].endswith("SegmentationClass/2007_000033.png")
    assert data[1]["label"].ravel()[:2].tolist() == [15, 3]


def test_voc20_reduces_zero_label(tmp_path):
    _voc(tmp_path, {"a": [0, 1, 20, 255]})
    meta = get_metadata("voc20")
    assert meta.num_classes == 20 and meta.reduce_zero_label and meta.background_index is None
    lab = build_semseg_dataset("voc20", tmp_path)[0]["label"]
    assert lab.ravel()[:4].tolist() == [255, 0, 19, 255]


def test_data_root_from_environment(tmp_path, monkeypatch):
    _voc(tmp_path, {"a": [1]})
    monkeypatch.setenv("OVDENSE_DATASETS", str(tmp_path))
    assert len(build_semseg_dataset("voc21")) == 1


def test_data_root_may_point_at_the_dataset_folder(tmp_path):
    voc = _voc(tmp_path, {"a": [1]})
    assert build_semseg_dataset("voc21", voc).root == voc


def test_limit_keeps_first_sorted_ids(tmp_path):
    _voc(tmp_path, {"c": [1], "a": [2], "b": [3]})
    data = build_semseg_dataset("voc21", tmp_path, limit=2)
    assert [s.id for s in data.samples] == ["a", "b"]
    with pytest.raises(ValueError, match="limit"):
        build_semseg_dataset("voc21", tmp_path, limit=0)


# -- Pascal Context -----------------------------------------------------------------------------


def _context(root: Path, folder: str, arr: np.ndarray) -> None:
    ctx = root / "VOCdevkit" / "VOC2010"
    split = ctx / "ImageSets" / "SegmentationContext" / "val.txt"
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text("2008_000002\n")
    _image(ctx / "JPEGImages" / "2008_000002.jpg", 0)
    _label(ctx / folder / "2008_000002.png", arr)


def test_context60_and_context59(tmp_path):
    _context(tmp_path, "SegmentationClassContext", _label_map([0, 1, 59, 255]))
    lab60 = build_semseg_dataset("context60", tmp_path)[0]["label"]
    assert lab60.ravel()[:4].tolist() == [0, 1, 59, 255]
    lab59 = build_semseg_dataset("context59", tmp_path)[0]["label"]
    assert lab59.ravel()[:4].tolist() == [255, 0, 58, 255]
    assert get_metadata("context60").background_index == 0


def test_context459_uint16(tmp_path):
    _context(tmp_path, "SegmentationClassContext459", _label_map([0, 300, 458, 65535], np.uint16))
    data = build_semseg_dataset("context459", tmp_path)
    assert data.metadata.ignore_label == 65535
    assert data[0]["label"].ravel()[:4].tolist() == [0, 300, 458, 65535]


# -- COCO ---------------------------------------------------------------------------------------


def _coco(root: Path) -> Path:
    coco = root / "coco_stuff164k"
    for i, sid in enumerate(["000000000139", "000000000285", "000000000632"]):
        _image(coco / "images" / "val2017" / f"{sid}.jpg", i)
    ann = coco / "annotations" / "val2017"
    _label(ann / "000000000139_labelTrainIds.png", _label_map([0, 170, 255]))
    _label(ann / "000000000285_labelTrainIds.png", _label_map([5]))
    _label(ann / "000000000139_instanceTrainIds.png", _label_map([0, 1, 80, 255]))
    return coco


def test_coco_stuff_only_images_with_labels(tmp_path):
    _coco(tmp_path)
    with pytest.warns(UserWarning, match="1 image"):
        data = build_semseg_dataset("coco_stuff171", tmp_path)
    assert [s.id for s in data.samples] == ["000000000139", "000000000285"]
    assert data[0]["label"].ravel()[:3].tolist() == [0, 170, 255]


def test_coco_object(tmp_path):
    _coco(tmp_path)
    with pytest.warns(UserWarning):
        data = build_semseg_dataset("coco_object", tmp_path)
    assert [s.id for s in data.samples] == ["000000000139"]
    assert data.metadata.num_classes == 81 and data.metadata.background_index == 0
    assert data[0]["label"].ravel()[:4].tolist() == [0, 1, 80, 255]


def test_coco_object_without_instance_labels_says_what_is_missing(tmp_path):
    coco = _coco(tmp_path)
    (coco / "annotations" / "val2017" / "000000000139_instanceTrainIds.png").unlink()
    with pytest.raises(FileNotFoundError, match="_instanceTrainIds.png"):
        build_semseg_dataset("coco_object", tmp_path)


# -- Cityscapes ---------------------------------------------------------------------------------


def test_cityscapes_city_ids(tmp_path):
    cs = tmp_path / "cityscapes"
    for city, x in [("frankfurt", "frankfurt_000000_000294"), ("lindau", "lindau_000001_000019")]:
        _image(cs / "leftImg8bit" / "val" / city / f"{x}_leftImg8bit.png", 0, fmt="PNG")
        gt = cs / "gtFine" / "val" / city
        _label(gt / f"{x}_gtFine_labelTrainIds.png", _label_map([0, 18, 255]))
        _label(gt / f"{x}_gtFine_labelIds.png", _label_map([33]))  # not used
    data = build_semseg_dataset("cityscapes", tmp_path)
    assert [s.id for s in data.samples] == [
        "frankfurt/frankfurt_000000_000294",
        "lindau/lindau_000001_000019",
    ]
    item = data[1]
    assert item["label_path"].endswith("lindau/lindau_000001_000019_gtFine_labelTrainIds.png")
    assert item["label"].ravel()[:3].tolist() == [0, 18, 255]


def test_cityscapes_without_train_ids_points_to_the_conversion(tmp_path):
    cs = tmp_path / "cityscapes"
    _image(cs / "leftImg8bit" / "val" / "ulm" / "ulm_1_leftImg8bit.png", 0, fmt="PNG")
    _label(cs / "gtFine" / "val" / "ulm" / "ulm_1_gtFine_labelIds.png", _label_map([7]))
    with pytest.raises(FileNotFoundError, match="createTrainIdLabelImgs"):
        build_semseg_dataset("cityscapes", tmp_path)


# -- ADE20K -------------------------------------------------------------------------------------


def _ade150(root: Path, values: list[int]) -> Path:
    ade = root / "ADEChallengeData2016"
    _image(ade / "images" / "validation" / "ADE_val_00000001.jpg", 0)
    _label(ade / "annotations" / "validation" / "ADE_val_00000001.png", _label_map(values))
    return ade


def test_ade20k_150_reduce_zero_label(tmp_path):
    _ade150(tmp_path, [0, 1, 150, 255])
    data = build_semseg_dataset("ade20k_150", tmp_path)
    assert [s.id for s in data.samples] == ["ADE_val_00000001"]
    assert data[0]["label"].ravel()[:4].tolist() == [255, 0, 149, 255]


def test_ade20k_847_uint16_tiff(tmp_path):
    ade = tmp_path / "ADE20K_2021_17_01"
    _image(ade / "images_detectron2" / "validation" / "ADE_frame_1.jpg", 0)
    lab = _label_map([0, 500, 846, 65535], np.uint16)
    _label(ade / "annotations_detectron2" / "validation" / "ADE_frame_1.tif", lab)
    data = build_semseg_dataset("ade20k_847", tmp_path)
    assert data.metadata.ignore_label == 65535
    assert data[0]["label"].ravel()[:4].tolist() == [0, 500, 846, 65535]


# -- per-file errors ----------------------------------------------------------------------------


def test_label_size_mismatch_names_both_files(tmp_path):
    ade = _ade150(tmp_path, [1])
    _label(ade / "annotations" / "validation" / "ADE_val_00000001.png", np.ones((7, 7), np.uint8))
    data = build_semseg_dataset("ade20k_150", tmp_path)
    with pytest.raises(DatasetFileError) as info:
        data[0]
    msg = str(info.value)
    assert "ADE_val_00000001.jpg" in msg and "ADE_val_00000001.png" in msg
    assert "8x6" in msg and "7x7" in msg
    assert info.value.path.name == "ADE_val_00000001.png"


def test_out_of_range_label_names_file_and_values(tmp_path):
    _voc(tmp_path, {"a": [0, 21, 40, 255]})
    data = build_semseg_dataset("voc21", tmp_path)
    with pytest.raises(DatasetFileError, match=r"a\.png.*\[21, 40\]"):
        data[0]


def test_out_of_range_after_reduce_zero_label(tmp_path):
    _ade150(tmp_path, [151])
    with pytest.raises(DatasetFileError, match=r"\[151\]"):
        build_semseg_dataset("ade20k_150", tmp_path)[0]


def test_missing_files_are_dataset_file_errors(tmp_path):
    voc = _voc(tmp_path, {"a": [1], "b": [2]})
    (voc / "SegmentationClass" / "a.png").unlink()
    (voc / "JPEGImages" / "b.jpg").unlink()
    data = build_semseg_dataset("voc21", tmp_path)
    with pytest.raises(DatasetFileError, match=r"a\.png"):
        data[0]
    with pytest.raises(DatasetFileError, match=r"b\.jpg"):
        data[1]


def test_unreadable_image_is_a_dataset_file_error(tmp_path):
    voc = _voc(tmp_path, {"a": [1]})
    (voc / "JPEGImages" / "a.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetFileError, match=r"a\.jpg"):
        build_semseg_dataset("voc21", tmp_path)[0]


# -- missing layouts ----------------------------------------------------------------------------


def test_missing_dataset_folder_names_expected_path(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        build_semseg_dataset("ade20k_150", tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "ADEChallengeData2016") in msg and "datasets/README.md" in msg


def test_missing_split_file_names_expected_path(tmp_path):
    (tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as info:
        build_semseg_dataset("voc21", tmp_path)
    msg = str(info.value)
    assert "ImageSets/Segmentation/val.txt" in msg and "datasets/README.md" in msg


def test_missing_image_folder_names_expected_path(tmp_path):
    (tmp_path / "ADEChallengeData2016" / "annotations" / "validation").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="images/validation"):
        build_semseg_dataset("ade20k_150", tmp_path)
