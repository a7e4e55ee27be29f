"""The catalog: one registry of datasets, semantic-segmentation and instance sets alike.

One home for what a benchmark *is* (its classes, ignore label, background class, label
convention) and where its files are (a layout under a data root). In the spirit of detectron2's
``DatasetCatalog`` / ``MetadataCatalog``::

    from ovdense.data import build_semseg_dataset, get_metadata

    meta = get_metadata("voc21")
    vocab = meta.vocabulary("unified")          # 21 classes, class 0 = 26 background names
    data = build_semseg_dataset("voc21", "~/datasets")
    item = data[0]                               # id, image [H, W, 3] uint8, label [H, W] int64

Every entry (:class:`DatasetEntry`) has a ``kind``: ``"semseg"`` (metadata + sample lister,
:func:`register_semseg`) or ``"instances"`` (a COCO-format JSON + image folder, e.g. for region
classification, :func:`register_instances`); a name is registered once across both kinds.
The built-in benchmarks are registered by :mod:`ovdense.data.builtin`; user folders with
:func:`register_folder_dataset` or a ``folder:<images>:<labels>:<classes.txt>`` spec
(:func:`parse_dataset_spec`).

The rest lives by job and is re-exported here: metadata and the class-name parsing rules in
:mod:`ovdense.data.metadata`, data roots and generated datasets in :mod:`ovdense.data.roots`,
what a user folder is in :mod:`ovdense.data.folders`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..utils.registry import unknown_name_message
from ..vocabulary import Vocabulary
from .folders import FOLDER_SPEC_PREFIX, folder_dataset, parse_folder_spec
from .metadata import CLASSNAMES_DIR, PARSE_RULES, SemSegMetadata
from .roots import (
    DATASETS_ENV,
    LAYOUT_HINT,
    dataset_folder,
    generated_data_root,
    materialize,
    resolve_data_root,
)
from .semseg import SemSegDataset, SemSegSample

__all__ = [
    "CLASSNAMES_DIR",
    "DATASETS_ENV",
    "DATASET_KINDS",
    "PARSE_RULES",
    "DatasetEntry",
    "SemSegMetadata",
    "build_semseg_dataset",
    "dataset_vocabulary",
    "generated_data_root",
    "get_entry",
    "get_instances_files",
    "get_metadata",
    "list_datasets",
    "list_instance_datasets",
    "materialize",
    "parse_dataset_spec",
    "register_folder_dataset",
    "register_instances",
    "register_semseg",
    "resolve_data_root",
]

DatasetKind = Literal["semseg", "instances"]

#: The kinds of catalog entries.
DATASET_KINDS: tuple[str, ...] = ("semseg", "instances")

_FOLDER_HINT = " A folder of your own: 'folder:<images>:<labels>:<classes.txt>'."


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset.

    Attributes:
        name: The catalog name.
        kind: ``"semseg"`` or ``"instances"``.
        default_root: Its folder, relative to the data root or absolute.
        generate: For a generated dataset, what writes it into an empty folder; else None.
        metadata: (semseg) Classes and label conventions.
        list_samples: (semseg) Called with the dataset folder, returns the samples.
        key: (semseg) Identifies a folder registration (idempotent re-registration).
        json_name: (instances) The annotation JSON, relative to the folder.
        image_dir: (instances) The image folder, relative to the folder.
    """

    name: str
    kind: DatasetKind
    default_root: str
    generate: Callable[[Path], None] | None = None
    metadata: SemSegMetadata | None = None
    list_samples: Callable[[Path], list[SemSegSample]] | None = None
    key: tuple | None = None
    json_name: str = "instances.json"
    image_dir: str = "images"

    def __post_init__(self) -> None:
        if self.kind not in DATASET_KINDS:
            raise ValueError(f"Unknown dataset kind '{self.kind}'; use one of {DATASET_KINDS}.")
        if self.kind == "semseg" and (self.metadata is None or self.list_samples is None):
            raise ValueError(
                f"Semantic-segmentation dataset '{self.name}' needs metadata and a lister."
            )


#: The registry: every dataset, whatever its kind, by name.
_CATALOG: dict[str, DatasetEntry] = {}


class _KindView(Mapping[str, DatasetEntry]):
    """The entries of one kind, read live from :data:`_CATALOG` (read-only)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def _items(self) -> dict[str, DatasetEntry]:
        return {n: e for n, e in _CATALOG.items() if e.kind == self.kind}

    def __getitem__(self, name: str) -> DatasetEntry:
        entry = _CATALOG[name]
        if entry.kind != self.kind:
            raise KeyError(name)
        return entry

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())


#: The instance entries of :data:`_CATALOG` (a live view; the name older code used).
_INSTANCES: Mapping[str, DatasetEntry] = _KindView("instances")


def _names(kind: str) -> list[str]:
    return sorted(n for n, e in _CATALOG.items() if e.kind == kind)


def _register(entry: DatasetEntry) -> None:
    name = entry.name
    if name in _CATALOG:
        raise KeyError(
            f"Dataset '{name}' is already registered; choose another name "
            f"(registered: {', '.join(sorted(_CATALOG))})."
        )
    _CATALOG[name] = entry


def get_entry(name: str, kind: DatasetKind = "semseg") -> DatasetEntry:
    """The catalog entry of a registered dataset of ``kind``.

    Raises:
        KeyError: No dataset of that kind has this name (the closest is suggested).
    """
    entry = _CATALOG.get(name)
    if entry is not None and entry.kind == kind:
        return entry
    if kind == "instances":
        raise KeyError(unknown_name_message("instance dataset", name, _names(kind)))
    raise KeyError(unknown_name_message("dataset", name, _names(kind)) + _FOLDER_HINT)


# --------------------------------------------------------------------------------------------
# Semantic-segmentation datasets
# --------------------------------------------------------------------------------------------


def register_semseg(
    meta: SemSegMetadata,
    list_samples: Callable[[Path], list[SemSegSample]],
    default_root: str,
    generate: Callable[[Path], None] | None = None,
) -> None:
    """Register a dataset.

    Args:
        meta: Its metadata; ``meta.name`` is the catalog name.
        list_samples: Called with the dataset folder (see ``default_root``), returns the samples
            of the split. Raise ``FileNotFoundError`` naming the expected path when the layout
            is not there.
        default_root: Where the dataset lives: a path relative to the data root (e.g.
            ``"VOCdevkit/VOC2012"``), or an absolute path for a dataset outside it.
        generate: For a generated dataset: writes it into the (empty) folder it is given. It
            runs once, on first use, under the data root or, with none given,
            :func:`generated_data_root`.

    Raises:
        KeyError: The name is already registered.
    """
    _register(DatasetEntry(meta.name, "semseg", str(default_root), generate, meta, list_samples))


def get_metadata(name: str) -> SemSegMetadata:
    """The metadata of a registered dataset.

    Raises:
        KeyError: Unknown name (the message suggests the closest and lists the available ones).
    """
    meta = get_entry(name).metadata
    assert meta is not None
    return meta


def dataset_vocabulary(name: str, rule: str = "unified") -> Vocabulary:
    """The classes of a registered dataset as a vocabulary (class ``i`` = label ``i``):
    ``get_metadata(name).vocabulary(rule)``, e.g. the training classes of a config."""
    return get_metadata(name).vocabulary(rule)


def list_datasets() -> list[str]:
    """The registered semantic-segmentation dataset names, sorted."""
    return _names("semseg")


def build_semseg_dataset(
    name: str, data_root: str | os.PathLike | None = None, limit: int | None = None
) -> SemSegDataset:
    """Load the split of a registered dataset.

    Args:
        name: A catalog name (:func:`list_datasets`) or a
            ``folder:<images>:<labels>:<classes.txt>`` spec.
        data_root: The folder holding the datasets (default: ``$OVDENSE_DATASETS``); not needed
            for folder datasets.
        limit: Keep the first ``limit`` samples (ids sorted).

    Returns:
        The dataset; samples sorted by id.

    Raises:
        KeyError: Unknown name.
        ValueError: No data root given, a bad ``limit``, or the split has no samples.
        FileNotFoundError: The data root or the dataset's layout is not on disk (the message
            names the expected path).
    """
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be a positive number of images or None, got {limit!r}.")
    name = parse_dataset_spec(name)
    entry = get_entry(name)
    assert entry.metadata is not None and entry.list_samples is not None
    folder = dataset_folder(name, entry.default_root, entry.generate, data_root)
    samples = sorted(entry.list_samples(folder), key=lambda s: s.id)
    if not samples:
        raise ValueError(f"Dataset '{name}' has no samples in '{folder}'. {LAYOUT_HINT}")
    if limit is not None:
        samples = samples[:limit]
    return SemSegDataset(entry.metadata, samples, folder)


# --------------------------------------------------------------------------------------------
# Instance datasets (COCO-format JSON + image folder), e.g. for region classification
# --------------------------------------------------------------------------------------------


def register_instances(
    name: str,
    default_root: str,
    json_name: str = "instances.json",
    image_dir: str = "images",
    generate: Callable[[Path], None] | None = None,
) -> None:
    """Register a COCO-format instance dataset: ``<folder>/<json_name>`` + ``<folder>/<image_dir>``.

    ``default_root`` and ``generate`` mean what they mean for :func:`register_semseg`.

    Raises:
        KeyError: The name is already registered.
    """
    _register(
        DatasetEntry(
            name, "instances", str(default_root), generate, json_name=json_name, image_dir=image_dir
        )
    )


def list_instance_datasets() -> list[str]:
    """The registered instance dataset names, sorted."""
    return _names("instances")


def get_instances_files(name: str, data_root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The ``(annotation JSON, image folder)`` of a registered instance dataset (a generated
    one is written on first use).

    Raises:
        KeyError: Unknown name (the closest is suggested).
        FileNotFoundError: The files are not on disk (the message names the expected path).
    """
    entry = get_entry(name, "instances")
    folder = dataset_folder(name, entry.default_root, entry.generate, data_root, must_exist=False)
    json_path, images = folder / entry.json_name, folder / entry.image_dir
    for what, path in (("annotation file", json_path), ("image folder", images)):
        if not path.exists():
            raise FileNotFoundError(
                f"Dataset '{name}': {what} not found; expected '{path}'. {LAYOUT_HINT}"
            )
    return json_path, images


# --------------------------------------------------------------------------------------------
# User folders (what a folder is: ovdense.data.folders)
# --------------------------------------------------------------------------------------------


def register_folder_dataset(
    name: str,
    image_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    classes: str | os.PathLike | Sequence[str | Sequence[str]],
    ignore_label: int = 255,
    reduce_zero_label: bool = False,
    background_index: int | None = None,
    label_suffix: str = ".png",
) -> SemSegMetadata:
    """Register a folder of images and a folder of label maps as a dataset.

    Images ``image_dir/**/{stem}.{jpg,png,...}`` are paired with labels
    ``label_dir/**/{stem}{label_suffix}``; images without a label are skipped with a warning
    when the dataset is built. Sample ids are image paths relative to ``image_dir`` without
    extension. Registering the same name again with the same arguments is a no-op.

    Args:
        name: Catalog name.
        image_dir: Folder of images (searched recursively).
        label_dir: Folder of label maps (one class index per pixel; palette, 8- or 16-bit).
        classes: A class-name file (one class per line, synonyms split by the parsing rule) or
            a list with one entry per class: a line (``"sofa, couch"``) or a list of names.
        ignore_label: Label value that is not scored.
        reduce_zero_label: Label 0 means "unlabelled" and ``1..K`` are the classes.
        background_index: The background class, if any.
        label_suffix: What follows the stem in label file names.

    Returns:
        The registered metadata.

    Raises:
        FileNotFoundError: A folder or the class-name file does not exist.
        KeyError: ``name`` is registered with other arguments.
        ValueError: Bad classes or label conventions.
    """
    folder = folder_dataset(
        name,
        image_dir,
        label_dir,
        classes,
        ignore_label=ignore_label,
        reduce_zero_label=reduce_zero_label,
        background_index=background_index,
        label_suffix=label_suffix,
    )
    existing = _CATALOG.get(name)
    if existing is not None and existing.key == folder.key and existing.metadata is not None:
        return existing.metadata
    meta = folder.metadata
    _register(
        DatasetEntry(
            name,
            "semseg",
            str(folder.images),
            metadata=meta,
            list_samples=folder.lister(),
            key=folder.key,
        )
    )
    return meta


def parse_dataset_spec(spec: str) -> str:
    """Resolve a ``--dataset`` argument to a catalog name, registering folder specs.

    Args:
        spec: A catalog name, or ``folder:<images>:<labels>:<classes.txt>`` (label files
            ``<labels>/**/<stem>.png``, ignore label 255, no background class).

    Returns:
        The catalog name: ``spec`` itself for a registered name; for a folder spec a name made
        from the image folder and a hash of the spec (``folder_imgs_1a2b3c``), the same in every
        process.

    Raises:
        ValueError: A malformed folder spec.
        KeyError: An unknown name.
        FileNotFoundError: A folder or file of a folder spec does not exist.
    """
    if not spec.startswith(FOLDER_SPEC_PREFIX):
        get_entry(spec)
        return spec
    name, images, labels, classes = parse_folder_spec(spec)
    register_folder_dataset(name, images, labels, classes)
    return name
