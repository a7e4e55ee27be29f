"""The catalog split by job: one registry of both kinds, old names kept, no upward imports."""

from __future__ import annotations

import pytest

from ovdense.data import catalog, coco, folders, metadata, roots
from ovdense.data.catalog import (
    DatasetEntry,
    get_entry,
    list_datasets,
    list_instance_datasets,
    register_instances,
    register_semseg,
)


@pytest.fixture(autouse=True)
def isolated_catalog(monkeypatch):
    monkeypatch.setattr(catalog, "_CATALOG", dict(catalog._CATALOG))


def test_catalog_keeps_its_names():
    assert catalog.SemSegMetadata is metadata.SemSegMetadata
    assert catalog.PARSE_RULES is metadata.PARSE_RULES
    assert catalog.CLASSNAMES_DIR == metadata.CLASSNAMES_DIR
    assert catalog.DATASETS_ENV == roots.DATASETS_ENV
    for name in ("materialize", "resolve_data_root", "generated_data_root"):
        assert getattr(catalog, name) is getattr(roots, name)


def test_one_registry_with_a_kind():
    assert get_entry("voc21").kind == "semseg"
    assert get_entry("shapes_det", "instances").kind == "instances"
    assert {e.kind for e in catalog._CATALOG.values()} == {"semseg", "instances"}
    assert set(list_datasets()).isdisjoint(list_instance_datasets())
    assert sorted(catalog._CATALOG) == sorted(list_datasets() + list_instance_datasets())
    assert dict(catalog._INSTANCES) == {
        n: get_entry(n, "instances") for n in list_instance_datasets()
    }
    with pytest.raises(KeyError, match="Unknown"):
        get_entry("shapes_det")  # an instance set is not a semantic-segmentation set
    with pytest.raises(KeyError):
        get_entry("voc21", "instances")


def test_a_name_is_registered_once_across_kinds():
    meta = catalog.get_metadata("voc21")
    register_instances("test_layout_inst", "x")
    with pytest.raises(KeyError, match="already registered"):
        register_semseg(
            catalog.SemSegMetadata(**{**meta.__dict__, "name": "test_layout_inst"}),
            lambda root: [],
            "y",
        )
    with pytest.raises(KeyError, match="already registered"):
        register_instances("voc21", "z")


def test_entries_check_their_kind():
    with pytest.raises(ValueError, match="kind"):
        DatasetEntry("x", "panoptic", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metadata"):
        DatasetEntry("x", "semseg", "x")


def test_folder_spec_names_are_stable_and_checked(tmp_path):
    spec = f"folder:{tmp_path}/imgs:{tmp_path}/labels:{tmp_path}/classes.txt"
    name, images, labels, classes = folders.parse_folder_spec(spec)
    assert name == folders.parse_folder_spec(spec)[0] and name.startswith("folder_imgs_")
    assert (images, labels, classes) == (
        tmp_path / "imgs",
        tmp_path / "labels",
        tmp_path / "classes.txt",
    )
    with pytest.raises(ValueError, match="Bad dataset spec"):
        folders.parse_folder_spec("folder:a:b")


def test_old_homes_reexport_the_moved_code():
    import ovdense.modeling.text as text
    import ovdense.modeling.text.vocabulary as old_vocabulary
    import ovdense.vocabulary as vocabulary
    from ovdense.evaluation import regions

    assert old_vocabulary is vocabulary and text.Vocabulary is vocabulary.Vocabulary
    for name in coco.__all__:
        assert getattr(regions, name) is getattr(coco, name)
