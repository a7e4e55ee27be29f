"""Generated datasets in the catalog: materialize, instance datasets, class groups, shapes sets."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdense.data import (
    SemSegMetadata,
    build_semseg_dataset,
    catalog,
    generated_data_root,
    get_instances_files,
    get_metadata,
    list_datasets,
    list_instance_datasets,
    register_instances,
    register_semseg,
    synthetic,
)
from ovdense.data.catalog import materialize
from ovdense.data.semseg import list_folder_samples
from ovdense.data.synthetic import class_groups, class_names, generate_scene, write_shapes_seg


@pytest.fixture(autouse=True)
def isolated_catalog(monkeypatch, tmp_path):
    """Registrations made by a test are dropped after it; no test writes to the real cache."""
    monkeypatch.setattr(catalog, "_CATALOG", dict(catalog._CATALOG))
    monkeypatch.setattr(catalog, "_INSTANCES", dict(catalog._INSTANCES))
    monkeypatch.delenv("OVDENSE_DATASETS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _meta(name: str, groups=None) -> SemSegMetadata:
    return SemSegMetadata(
        name=name,
        classnames_file="",
        num_classes=31,
        ignore_label=255,
        background_index=0,
        reduce_zero_label=False,
        classes=tuple(class_names()),
        class_groups=groups,
    )


def _lister(root: Path):
    return list_folder_samples(root / "images", root / "labels", ".png")


class _CountingGenerator:
    def __init__(self, num_images: int = 3, size: int = 64) -> None:
        self.calls: list[Path] = []
        self.num_images, self.size = num_images, size

    def __call__(self, folder: Path) -> None:
        self.calls.append(Path(folder))
        assert not any(Path(folder).iterdir()), "generate gets an empty folder"
        write_shapes_seg(folder, num_images=self.num_images, size=self.size)


def _register_generated(name: str, gen, rel: str = "gen/mine"):
    register_semseg(_meta(name, tuple(class_groups().items())), _lister, rel, generate=gen)


# --------------------------------------------------------------------------------------------
# generated_data_root
# --------------------------------------------------------------------------------------------


def test_generated_data_root(monkeypatch, tmp_path):
    assert generated_data_root() == tmp_path / "xdg" / "ovdense" / "datasets"
    monkeypatch.setenv("OVDENSE_DATASETS", str(tmp_path / "ds"))
    assert generated_data_root() == tmp_path / "ds"
    monkeypatch.delenv("OVDENSE_DATASETS")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert generated_data_root() == tmp_path / "home" / ".cache" / "ovdense" / "datasets"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty counts as unset
    assert generated_data_root() == tmp_path / "home" / ".cache" / "ovdense" / "datasets"


# --------------------------------------------------------------------------------------------
# Generated semantic-segmentation datasets
# --------------------------------------------------------------------------------------------


def test_generated_on_first_use_only(tmp_path):
    gen = _CountingGenerator()
    _register_generated("test_gen_once", gen)
    assert "test_gen_once" in list_datasets()
    folder = tmp_path / "xdg" / "ovdense" / "datasets" / "gen" / "mine"
    assert not folder.exists()  # registering writes nothing

    ds = build_semseg_dataset("test_gen_once")
    assert len(gen.calls) == 1
    assert gen.calls[0] != folder  # written elsewhere, then moved into place
    assert not gen.calls[0].exists()
    assert Path(ds.root) == folder
    assert (folder / ".complete").read_text().strip() == "test_gen_once"
    assert [s.id for s in ds.samples] == ["00000", "00001", "00002"]
    for i, sample in enumerate(ds.samples):
        label = np.array(Image.open(sample.label_path))
        np.testing.assert_array_equal(label, generate_scene(synthetic.VAL_SEED, i, 64, "val").label)
    # no temporary folder left next to the dataset
    assert sorted(p.name for p in folder.parent.iterdir()) == ["mine"]

    again = build_semseg_dataset("test_gen_once", limit=2)
    assert len(gen.calls) == 1
    assert [s.id for s in again.samples] == ["00000", "00001"]


def test_failing_generate_leaves_nothing(tmp_path):
    calls = []

    def broken(folder: Path) -> None:
        calls.append(folder)
        (folder / "images").mkdir()
        (folder / "images" / "half.png").write_bytes(b"x")
        raise RuntimeError("disk full")

    _register_generated("test_gen_broken", broken, rel="gen/broken")
    with pytest.raises(RuntimeError, match="disk full"):
        build_semseg_dataset("test_gen_broken")
    parent = tmp_path / "xdg" / "ovdense" / "datasets" / "gen"
    assert not (parent / "broken").exists()
    assert list(parent.iterdir()) == []
    assert not calls[0].exists()
    # the next call tries again
    with pytest.raises(RuntimeError):
        build_semseg_dataset("test_gen_broken")
    assert len(calls) == 2


def test_data_root_argument_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("OVDENSE_DATASETS", str(tmp_path / "env"))
    gen = _CountingGenerator(num_images=1)
    _register_generated("test_gen_root", gen)
    ds = build_semseg_dataset("test_gen_root", data_root=tmp_path / "arg")
    assert Path(ds.root) == tmp_path / "arg" / "gen" / "mine"
    assert not (tmp_path / "env").exists()
    # without the argument: the environment variable; a different folder, so generated again
    ds = build_semseg_dataset("test_gen_root")
    assert Path(ds.root) == tmp_path / "env" / "gen" / "mine"
    assert len(gen.calls) == 2
    assert not (tmp_path / "xdg").exists()


def test_materialize_concurrent_finished_copy_wins(tmp_path):
    """Another process finishing first: its copy is kept, ours is dropped."""
    folder = tmp_path / "a" / "b"

    def racing(tmp: Path) -> None:
        (tmp / "ours.txt").write_text("ours")
        folder.mkdir(parents=True)
        (folder / "theirs.txt").write_text("theirs")
        (folder / ".complete").write_text("other\n")

    assert materialize("x", "a/b", racing, tmp_path) == folder
    assert (folder / "theirs.txt").is_file()
    assert not (folder / "ours.txt").exists()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


def test_materialize_returns_existing_complete_folder(tmp_path):
    folder = tmp_path / "x" / "y"
    folder.mkdir(parents=True)
    (folder / ".complete").write_text("done\n")

    def never(tmp: Path) -> None:
        raise AssertionError("must not regenerate")

    assert materialize("n", "x/y", never, tmp_path) == folder


def test_materialize_never_deletes_a_folder_it_did_not_create(tmp_path):
    """A user's folder of the same name under a shared datasets root is left alone."""
    folder = tmp_path / "gen" / "shapes"
    folder.mkdir(parents=True)
    (folder / "my_annotations.json").write_text("{}")

    def gen(tmp: Path) -> None:
        (tmp / "x.txt").write_text("x")

    with pytest.raises(FileExistsError, match="ovdense never deletes what it did not create"):
        materialize("shapes", "gen/shapes", gen, tmp_path)
    assert (folder / "my_annotations.json").read_text() == "{}"
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["shapes"]  # no temp left


# --------------------------------------------------------------------------------------------
# Class groups
# --------------------------------------------------------------------------------------------


def test_class_groups_validation():
    meta = _meta("test_groups_ok", (("a", (1, 2)), ("b", (0, 30))))
    assert dict(meta.class_groups) == {"a": (1, 2), "b": (0, 30)}
    assert _meta("test_groups_none").class_groups is None
    for bad in ((("a", (31,)),), (("a", (-1, 2)),), (("a", ()),)):
        with pytest.raises(ValueError, match="class group 'a'"):
            _meta("test_groups_bad", bad)


def test_shapes_seg_registration():
    meta = get_metadata("shapes_seg")
    assert meta.class_groups is not None
    assert dict(meta.class_groups) == class_groups()
    assert meta.num_classes == 31
    assert meta.background_index == 0 and meta.ignore_label == 255
    assert not meta.reduce_zero_label
    assert list(meta.classes) == class_names()
    entry = catalog._CATALOG["shapes_seg"]
    assert entry.default_root == "shapes/seg_val"
    assert entry.generate is synthetic.write_shapes_seg


def test_shapes_seg_builds_from_generated_folder(monkeypatch, tmp_path):
    """The real registration's lister and metadata, with a small generator swapped in."""
    entry = catalog._CATALOG["shapes_seg"]
    gen = _CountingGenerator(num_images=2, size=48)
    monkeypatch.setitem(catalog._CATALOG, "shapes_seg", dataclasses.replace(entry, generate=gen))
    ds = build_semseg_dataset("shapes_seg", data_root=tmp_path / "root")
    assert Path(ds.root) == tmp_path / "root" / "shapes" / "seg_val"
    assert ds.metadata is entry.metadata
    assert [s.id for s in ds.samples] == ["00000", "00001"]
    label = np.array(Image.open(ds.samples[1].label_path))
    np.testing.assert_array_equal(label, generate_scene(synthetic.VAL_SEED, 1, 48, "val").label)


# --------------------------------------------------------------------------------------------
# Instance datasets
# --------------------------------------------------------------------------------------------


def test_shapes_det_registered():
    assert "shapes_det" in list_instance_datasets()
    assert "shapes_det" not in list_datasets()
    entry = catalog._INSTANCES["shapes_det"]
    assert entry.default_root == "shapes/det_val"
    assert (entry.json_name, entry.image_dir) == ("instances.json", "images")
    assert entry.generate is synthetic.write_shapes_det


def test_get_instances_files_generated(monkeypatch, tmp_path):
    calls = []

    def small(folder: Path) -> None:
        calls.append(folder)
        synthetic.write_shapes_det(folder, num_images=2, size=48)

    register_instances("test_inst_gen", "gen/det", generate=small)
    assert "test_inst_gen" in list_instance_datasets()
    json_path, images = get_instances_files("test_inst_gen", data_root=tmp_path / "r")
    assert json_path == tmp_path / "r" / "gen" / "det" / "instances.json"
    assert images == tmp_path / "r" / "gen" / "det" / "images"
    data = json.loads(json_path.read_text())
    assert len(data["images"]) == 2
    assert sorted(p.name for p in images.iterdir()) == ["00000.png", "00001.png"]
    get_instances_files("test_inst_gen", data_root=tmp_path / "r")
    assert len(calls) == 1
    # default root: the cache
    json_path, _ = get_instances_files("test_inst_gen")
    assert json_path.parent == tmp_path / "xdg" / "ovdense" / "datasets" / "gen" / "det"
    assert len(calls) == 2


def test_get_instances_files_on_disk(monkeypatch, tmp_path):
    register_instances("test_inst_disk", "coco", json_name="ann.json", image_dir="val")
    with pytest.raises(FileNotFoundError, match="ann.json"):
        get_instances_files("test_inst_disk", data_root=tmp_path)
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "ann.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="image folder"):
        get_instances_files("test_inst_disk", data_root=tmp_path)
    (tmp_path / "coco" / "val").mkdir()
    assert get_instances_files("test_inst_disk", data_root=tmp_path) == (
        tmp_path / "coco" / "ann.json",
        tmp_path / "coco" / "val",
    )
    monkeypatch.setenv("OVDENSE_DATASETS", str(tmp_path))
    assert get_instances_files("test_inst_disk")[0] == tmp_path / "coco" / "ann.json"


def test_instances_errors():
    with pytest.raises(KeyError, match="Did you mean 'shapes_det'"):
        get_instances_files("shapes_dt")
    with pytest.raises(KeyError, match="already registered"):
        register_instances("shapes_det", "elsewhere")
    with pytest.raises(KeyError, match="already registered"):
        register_instances("shapes_seg", "elsewhere")  # a semantic-segmentation name


def test_register_semseg_rejects_instance_name():
    with pytest.raises(KeyError, match="already registered"):
        register_semseg(_meta("shapes_det"), _lister, "x")


def test_materialize_removes_what_killed_generations_left(tmp_path):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that no longer runs
    parent = tmp_path / "gen"
    stale = parent / f".shapes.{proc.pid}.abc123"
    (stale / "images").mkdir(parents=True)
    alive = parent / f".shapes.{os.getpid()}.xyz"  # a generation still at work: kept
    alive.mkdir()
    other = parent / ".shapes_backup"  # not ovdense's pattern: kept
    other.mkdir()

    def gen(tmp: Path) -> None:
        (tmp / "x.txt").write_text("x")

    materialize("shapes", "gen/shapes", gen, tmp_path)
    assert not stale.exists() and alive.is_dir() and other.is_dir()
    assert (parent / "shapes" / "x.txt").is_file()
