"""The catalog: metadata, class-name parsing rules, data roots, folder datasets."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdense.data import (
    CLASSNAMES_DIR,
    PARSE_RULES,
    DatasetFileError,
    SemSegMetadata,
    SemSegSample,
    build_semseg_dataset,
    get_metadata,
    list_datasets,
    parse_dataset_spec,
    register_folder_dataset,
    register_semseg,
    resolve_data_root,
)
from ovdense.modeling.text.vocabulary import Vocabulary

BUILTIN = {
    "voc21": 21,
    "voc20": 20,
    "context60": 60,
    "context59": 59,
    "context459": 459,
    "coco_stuff171": 171,
    "coco_object": 81,
    "cityscapes": 19,
    "ade20k_150": 150,
    "ade20k_847": 847,
}


def test_builtins_registered():
    assert set(BUILTIN) <= set(list_datasets())
    assert list_datasets() == sorted(list_datasets())
    assert (CLASSNAMES_DIR / "cls_voc21.txt").is_file()


@pytest.mark.parametrize("name", sorted(BUILTIN))
@pytest.mark.parametrize("rule", PARSE_RULES)
def test_class_counts_match_num_classes(name, rule):
    meta = get_metadata(name)
    assert meta.num_classes == BUILTIN[name]
    assert len(meta.class_lines()) == meta.num_classes
    names = meta.class_names(rule)
    assert len(names) == meta.num_classes
    assert all(isinstance(n, list) and n and all(isinstance(x, str) for x in n) for n in names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # names shared by two classes (ADE-847, COCO-Object)
        vocab = meta.vocabulary(rule)
    assert isinstance(vocab, Vocabulary) and len(vocab) == meta.num_classes
    assert [list(c) for c in vocab.classes] == names


def test_ignore_labels_and_conventions():
    for name in ("context459", "ade20k_847"):
        assert get_metadata(name).ignore_label == 65535
    for name in ("voc21", "context60", "coco_object"):
        assert get_metadata(name).background_index == 0
    for name in ("ade20k_150", "voc20", "context59"):
        assert get_metadata(name).reduce_zero_label
    for name in ("voc21", "cityscapes", "coco_stuff171", "ade20k_847", "context459"):
        assert not get_metadata(name).reduce_zero_label


def test_voc21_background_per_rule():
    meta = get_metadata("voc21")
    sclip = meta.class_names("sclip")
    assert len(sclip) == 21 and len(sclip[0]) == 26
    assert sclip[0][:3] == ["sky", "wall", "tree"] and sclip[0][-1] == "fence"
    assert sclip[1] == ["aeroplane"]
    assert meta.class_names("naclip") == sclip == meta.class_names("unified")
    assert meta.class_names("proxyclip")[0] == sclip[0]
    assert meta.class_names("clearclip")[0] == ["background"]
    assert meta.class_names("clearclip")[1:] == sclip[1:]


def test_coco_object_background_per_rule():
    meta = get_metadata("coco_object")
    assert len(meta.class_names("sclip")[0]) == 17
    assert meta.class_names("clearclip")[0] == ["background"]
    with pytest.warns(UserWarning, match="bed"):  # "bed" is a background name and a class
        meta.vocabulary("sclip")


def test_building_edifice_per_rule():
    meta = get_metadata("ade20k_847")
    assert meta.class_lines()[1] == "building, edifice"
    assert meta.class_names("proxyclip")[1] == ["building, edifice"]
    assert meta.class_names("sclip")[1] == ["building", "edifice"]
    assert meta.class_names("unified")[1] == ["building", "edifice"]
    assert meta.class_names("clearclip")[1] == ["building", " edifice"]


def test_ade847_classes_sharing_a_first_name_are_kept():
    meta = get_metadata("ade20k_847")
    with pytest.warns(UserWarning, match="more than one class"):
        vocab = meta.vocabulary("unified")
    names = vocab.display_names
    assert names.count("bag") == 1 and len(vocab) == 847 and len(set(names)) == 847
    assert vocab.classes[114] == ("bag",) and names[114] == "bag"
    assert sum(n.startswith("bag (class ") for n in names) == 2


def test_unknown_rule():
    with pytest.raises(ValueError, match="sclip, naclip, clearclip, proxyclip, unified"):
        get_metadata("voc21").class_names("mmseg")


def test_unknown_dataset_suggests_closest():
    with pytest.raises(KeyError) as info:
        get_metadata("ade20k150")
    msg = str(info.value)
    assert "Did you mean 'ade20k_150'" in msg and "voc21" in msg
    with pytest.raises(KeyError, match="Did you mean 'voc21'"):
        build_semseg_dataset("voc2l", "/")


def test_metadata_validation():
    with pytest.raises(ValueError, match="ignore_label"):
        SemSegMetadata("x", "cls_voc21.txt", 300, 255, None, False)
    with pytest.raises(ValueError, match="background_index"):
        SemSegMetadata("x", "cls_voc21.txt", 21, 255, 21, False)


def test_class_file_with_wrong_count(tmp_path):
    meta = SemSegMetadata("x", "cls_voc21.txt", 20, 255, None, False)
    with pytest.raises(ValueError, match="21 classes.*num_classes=20"):
        meta.class_lines()


def test_register_twice_is_an_error():
    meta = get_metadata("voc21")
    with pytest.raises(KeyError, match="already registered"):
        register_semseg(meta, lambda root: [], "VOCdevkit/VOC2012")


# -- data roots ---------------------------------------------------------------------------------


def test_resolve_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("OVDENSE_DATASETS", raising=False)
    with pytest.raises(ValueError, match="--data-root.*OVDENSE_DATASETS"):
        resolve_data_root(None)
    assert resolve_data_root(tmp_path) == tmp_path
    assert resolve_data_root(str(tmp_path)) == tmp_path
    monkeypatch.setenv("OVDENSE_DATASETS", str(tmp_path))
    assert resolve_data_root(None) == tmp_path
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resolve_data_root(tmp_path / "nowhere")
    monkeypatch.setenv("OVDENSE_DATASETS", str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match="OVDENSE_DATASETS.*gone"):
        resolve_data_root(None)


def test_build_without_root(monkeypatch):
    monkeypatch.delenv("OVDENSE_DATASETS", raising=False)
    with pytest.raises(ValueError, match="OVDENSE_DATASETS"):
        build_semseg_dataset("voc21")


def test_build_with_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_semseg_dataset("voc21", tmp_path / "nowhere")


# -- registered custom dataset ------------------------------------------------------------------


def test_register_semseg_custom_lister(tmp_path):
    (tmp_path / "mine").mkdir()
    img, lab = tmp_path / "mine" / "i.png", tmp_path / "mine" / "l.png"
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(img)
    Image.fromarray(np.array([[0, 1, 2, 255]] * 3, np.uint8)).save(lab)
    meta = SemSegMetadata("test_custom_lister", "cls_voc21.txt", 21, 255, 0, False)
    register_semseg(meta, lambda root: [SemSegSample("i", root / "i.png", root / "l.png")], "mine")
    item = build_semseg_dataset("test_custom_lister", tmp_path)[0]
    assert item["label"].tolist() == [[0, 1, 2, 255]] * 3


# -- folder datasets ----------------------------------------------------------------------------


def _folder(tmp_path: Path) -> tuple[Path, Path]:
    images, labels = tmp_path / "imgs", tmp_path / "labels"
    for rel, values in [("a", [0, 1]), ("sub/b", [2, 255]), ("c", None)]:
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((2, 2, 3), 7, np.uint8)).save(images / f"{rel}.jpg")
        if values is not None:
            (labels / rel).parent.mkdir(parents=True, exist_ok=True)
            lab = np.array([values, values], np.uint8)
            Image.fromarray(lab).save(labels / f"{rel}_gt.png")
    return images, labels


def test_register_folder_dataset(tmp_path):
    images, labels = _folder(tmp_path)
    meta = register_folder_dataset(
        "test_folder_list",
        images,
        labels,
        ["road", "car, automobile", ["tree", "bush"]],
        label_suffix="_gt.png",
    )
    assert meta.num_classes == 3 and meta.ignore_label == 255
    assert meta.class_names("unified") == [["road"], ["car", "automobile"], ["tree", "bush"]]
    assert meta.class_names("proxyclip")[1] == ["car, automobile"]
    assert get_metadata("test_folder_list") is meta
    # same arguments again: a no-op
    assert (
        register_folder_dataset(
            "test_folder_list",
            images,
            labels,
            ["road", "car, automobile", ["tree", "bush"]],
            label_suffix="_gt.png",
        )
        == meta
    )
    with pytest.warns(UserWarning, match="1 image.*c"):
        data = build_semseg_dataset("test_folder_list")  # no data root needed
    assert [s.id for s in data.samples] == ["a", "sub/b"]
    assert data[1]["label"].tolist() == [[2, 255], [2, 255]]
    with pytest.raises(KeyError, match="already registered"):
        register_folder_dataset("test_folder_list", images, labels, ["x"], label_suffix="_gt.png")


def test_folder_dataset_with_class_file_and_bad_value(tmp_path):
    images, labels = _folder(tmp_path)
    classes = tmp_path / "classes.txt"
    classes.write_text("road\ncar, automobile\n\n")
    meta = register_folder_dataset(
        "test_folder_file", images, labels, classes, label_suffix="_gt.png"
    )
    assert meta.num_classes == 2 and meta.classnames_file == str(classes.resolve())
    with pytest.warns(UserWarning):
        data = build_semseg_dataset("test_folder_file")
    with pytest.raises(DatasetFileError, match=r"b_gt\.png.*\[2\]"):
        data[1]


def test_folder_dataset_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        register_folder_dataset("test_folder_missing", tmp_path / "nope", tmp_path, ["a"])


def test_parse_dataset_spec(tmp_path):
    images, labels = tmp_path / "imgs", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(images / f"x{i}.png")
        Image.fromarray(np.full((3, 3), i, np.uint8)).save(labels / f"x{i}.png")
    classes = tmp_path / "classes.txt"
    classes.write_text("background\nthing\n")
    spec = f"folder:{images}:{labels}:{classes}"
    name = parse_dataset_spec(spec)
    assert name.startswith("folder_imgs_") and "/" not in name and ":" not in name
    assert parse_dataset_spec(spec) == name  # idempotent, deterministic
    assert parse_dataset_spec("voc21") == "voc21"
    meta = get_metadata(name)
    assert meta.num_classes == 2 and meta.class_names() == [["background"], ["thing"]]
    data = build_semseg_dataset(spec)  # a spec is accepted directly too
    assert [s.id for s in data.samples] == ["x0", "x1"]
    assert data[1]["label"].tolist() == [[1] * 3] * 3
    with pytest.raises(ValueError, match="folder:<images>:<labels>:<classes.txt>"):
        parse_dataset_spec(f"folder:{images}:{labels}")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        parse_dataset_spec(f"folder:{images}:{labels}:{tmp_path / 'missing.txt'}")
    with pytest.raises(KeyError, match="Did you mean 'voc21'"):
        parse_dataset_spec("voc12")
