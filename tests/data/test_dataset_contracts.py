"""What every registered dataset promises (issue #11): parametrized over the catalog itself, so a
dataset registered later is checked without being listed here."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from ovdense.data import (
    PARSE_RULES,
    get_instances_files,
    get_metadata,
    list_datasets,
    list_instance_datasets,
)
from ovdense.data.catalog import get_entry
from ovdense.modeling.text.vocabulary import Vocabulary

SEMSEG = list_datasets()
INSTANCES = list_instance_datasets()


def test_the_registry_is_not_empty_and_kinds_do_not_share_names():
    assert SEMSEG and INSTANCES
    assert not set(SEMSEG) & set(INSTANCES)


@pytest.mark.parametrize("name", SEMSEG)
def test_semseg_entry(name):
    entry = get_entry(name)
    meta = get_metadata(name)
    assert entry.kind == "semseg" and entry.name == meta.name == name
    assert entry.default_root and callable(entry.list_samples)
    assert entry.generate is None or callable(entry.generate)
    assert meta.description, "one line for listings"


@pytest.mark.parametrize("name", SEMSEG)
@pytest.mark.parametrize("rule", PARSE_RULES)
def test_classes_and_vocabulary_under_every_rule(name, rule):
    meta = get_metadata(name)
    assert len(meta.class_lines()) == meta.num_classes  # the class-name file (or inline list)
    names = meta.class_names(rule)
    assert len(names) == meta.num_classes
    assert all(n and all(isinstance(x, str) and x.strip() for x in n) for n in names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # names shared by two classes (ADE-847, COCO-Object)
        vocab = meta.vocabulary(rule)
    assert isinstance(vocab, Vocabulary) and len(vocab) == meta.num_classes


@pytest.mark.parametrize("name", SEMSEG)
def test_label_conventions(name):
    meta = get_metadata(name)
    k = meta.num_classes
    assert not 0 <= meta.ignore_label < k, "the ignore label is outside the class range"
    # the label files must be able to hold every class and the ignore label
    assert meta.ignore_label in (255, 65535)
    assert k <= 255 or meta.ignore_label == 65535
    assert meta.background_index is None or 0 <= meta.background_index < k
    if meta.reduce_zero_label:  # label 0 is "unlabelled": no class of its own, so no background
        assert meta.background_index is None


@pytest.mark.parametrize("name", SEMSEG)
def test_class_groups_partition_valid_indices(name):
    meta = get_metadata(name)
    groups = dict(meta.class_groups or ())
    assert len(groups) == len(meta.class_groups or ()), "group names are unique"
    seen: set[int] = set()
    for group, members in groups.items():
        assert group and members, group
        assert all(isinstance(c, int) and 0 <= c < meta.num_classes for c in members), group
        assert len(set(members)) == len(members), f"{group} repeats a class"
        assert not seen & set(members), f"{group} overlaps another group"
        seen |= set(members)
    if groups and meta.background_index is not None:
        assert meta.background_index not in seen, "the background is no composition of a group"


@pytest.mark.parametrize("name", INSTANCES)
def test_instance_entry(name):
    entry = get_entry(name, "instances")
    assert entry.kind == "instances" and entry.name == name
    assert entry.metadata is None and entry.list_samples is None
    assert entry.default_root and entry.json_name and entry.image_dir
    assert not Path(entry.json_name).is_absolute() and not Path(entry.image_dir).is_absolute()
    assert entry.generate is None or callable(entry.generate)
    with pytest.raises(KeyError):
        get_metadata(name)  # not a semantic-segmentation dataset


@pytest.mark.parametrize("name", INSTANCES)
def test_generated_instance_files_are_consistent(name, tmp_path, monkeypatch):
    """A generated instance set (written here, small) is a consistent COCO file: unique ids,
    every annotation on a listed image and category, every image on disk."""
    import ovdense.data.synthetic as synthetic

    if get_entry(name, "instances").generate is None:
        pytest.skip("not generated: needs the real files")
    monkeypatch.setattr(synthetic, "VAL_IMAGES", 3)
    json_path, images = get_instances_files(name, tmp_path)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    cats = {c["id"]: c for c in data["categories"]}
    imgs = {i["id"]: i for i in data["images"]}
    assert len(cats) == len(data["categories"]) and all(c["name"] for c in cats.values())
    assert len(imgs) == len(data["images"]) >= 1
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    for ann in data["annotations"]:
        assert ann["category_id"] in cats and ann["image_id"] in imgs
    for image in imgs.values():
        assert (images / image["file_name"]).is_file()
