"""Data: the catalog of datasets and the class-name files of the literature.

``get_metadata(name)`` says what a benchmark is (classes, ignore label, label convention);
``build_semseg_dataset(name, data_root)`` loads its validation split. The built-in benchmarks
(:mod:`ovdense.data.builtin`) are registered on import.

By job: :mod:`~ovdense.data.metadata` (what a dataset is, class-name rules),
:mod:`~ovdense.data.catalog` (the one registry, semantic-segmentation and instance sets),
:mod:`~ovdense.data.roots` (data roots, generated datasets), :mod:`~ovdense.data.folders`
(user folders), :mod:`~ovdense.data.semseg` (samples and the dataset),
:mod:`~ovdense.data.coco` (COCO panoptic / instance annotations),
:mod:`~ovdense.data.synthetic` (the shapes world), :mod:`~ovdense.data.images` (image folders).
Nothing here imports :mod:`ovdense.modeling`, :mod:`ovdense.evaluation` or
:mod:`ovdense.engine`; label files are read and written by :mod:`ovdense.utils.labels`.
"""

from . import builtin  # noqa: F401  (registers the built-in datasets)
from .catalog import (
    CLASSNAMES_DIR,
    DATASETS_ENV,
    PARSE_RULES,
    SemSegMetadata,
    build_semseg_dataset,
    dataset_vocabulary,
    generated_data_root,
    get_instances_files,
    get_metadata,
    list_datasets,
    list_instance_datasets,
    parse_dataset_spec,
    register_folder_dataset,
    register_instances,
    register_semseg,
    resolve_data_root,
)
from .semseg import DatasetFileError, SemSegDataset, SemSegSample, list_folder_samples

__all__ = [
    "CLASSNAMES_DIR",
    "DATASETS_ENV",
    "PARSE_RULES",
    "DatasetFileError",
    "SemSegDataset",
    "SemSegMetadata",
    "SemSegSample",
    "build_semseg_dataset",
    "dataset_vocabulary",
    "generated_data_root",
    "get_instances_files",
    "get_metadata",
    "list_datasets",
    "list_instance_datasets",
    "list_folder_samples",
    "parse_dataset_spec",
    "register_folder_dataset",
    "register_instances",
    "register_semseg",
    "resolve_data_root",
]
