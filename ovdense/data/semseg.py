"""Semantic-segmentation samples and the dataset that loads them in the evaluation convention.

A dataset is a sorted list of :class:`SemSegSample` (an id, an image file and a label file) plus
the :class:`~ovdense.data.metadata.SemSegMetadata` that says how to read the labels. Indexing it
loads one image and turns its label file into the *evaluation convention*: an ``int64`` map
whose values are class indices ``0..K-1`` or ``metadata.ignore_label``. A problem with one file
(missing, unreadable, size mismatch, unknown class values) raises :class:`DatasetFileError`, so
an evaluation loop can report the file and go on with the rest.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.image import IMAGE_EXTENSIONS, load_image
from ..utils.labels import read_label_image
from .metadata import SemSegMetadata

__all__ = [
    "DatasetFileError",
    "SemSegDataset",
    "SemSegSample",
    "list_folder_samples",
    "read_label_file",
]

# How many distinct bad label values an error message lists.
_MAX_LISTED_VALUES = 8


@dataclass(frozen=True)
class SemSegSample:
    """One image of a split and its label file.

    Attributes:
        id: Unique within the split, e.g. ``"2007_000033"`` or
            ``"frankfurt/frankfurt_000000_000294"`` (may contain ``/``).
        image_path: The image file.
        label_path: The label file (one class index per pixel, in the dataset's own convention).
    """

    id: str
    image_path: Path
    label_path: Path


class DatasetFileError(ValueError):
    """A problem with ONE file of a dataset (missing, unreadable or inconsistent).

    The message names the file; an evaluation loop may report it and skip the sample.

    Attributes:
        path: The offending file.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


def read_label_file(path: str | os.PathLike) -> np.ndarray:
    """Read a label file as stored: palette indices, 8-bit or 16-bit gray PNG, or TIFF.

    Palette ("P") PNGs give their indices, not their colours. 16-bit files (Pascal Context 459,
    ADE20K-847) keep their values. The reading is :func:`ovdense.utils.labels.read_label_image`'s;
    this adds the dataset's error type.

    Args:
        path: The label file.

    Returns:
        The raw values, shape ``[H, W]`` (``uint8``, ``uint16`` or ``int32``).

    Raises:
        DatasetFileError: The file is missing, unreadable or not a single-channel label map.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetFileError(f"Label file not found: '{p}'.", p)
    try:
        return read_label_image(p)
    except (ValueError, OSError) as exc:
        raise DatasetFileError(f"Cannot read label file '{p}': {exc}", p) from exc


class SemSegDataset(torch.utils.data.Dataset):
    """A semantic-segmentation split: images and label maps in the evaluation convention.

    Usually made by :func:`~ovdense.data.catalog.build_semseg_dataset`.

    Args:
        metadata: Classes and label conventions of the dataset.
        samples: The samples, in order (their ids must be unique).
        root: The folder the dataset was read from (for messages and provenance).

    Attributes:
        metadata: As given.
        samples: As given, as a list.
        root: As given, as a ``Path``.
    """

    def __init__(
        self, metadata: SemSegMetadata, samples: Sequence[SemSegSample], root: str | os.PathLike
    ) -> None:
        self.metadata = metadata
        self.samples = list(samples)
        self.root = Path(root)
        seen: set[str] = set()
        dup: list[str] = []
        for s in self.samples:
            if s.id in seen:
                dup.append(s.id)
            else:
                seen.add(s.id)
        if dup:
            raise ValueError(
                f"Dataset '{metadata.name}' has duplicated sample ids {dup[:5]}; each id must "
                "name one image of the split."
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Load one sample.

        Args:
            index: Position in :attr:`samples`.

        Returns:
            A dict with ``id`` (str), ``image`` (``uint8 [H, W, 3]`` RGB), ``label``
            (``int64 [H, W]``, values ``0..K-1`` or ``metadata.ignore_label``), ``image_path``
            and ``label_path`` (str).

        Raises:
            DatasetFileError: A file of this sample is missing or unreadable, the image and label
                sizes differ, or the label holds values that are neither a class nor the ignore
                label.
        """
        sample = self.samples[index]
        image = _load_sample_image(sample.image_path)
        raw = read_label_file(sample.label_path)
        if raw.shape != image.shape[:2]:
            ih, iw = image.shape[:2]
            lh, lw = raw.shape
            raise DatasetFileError(
                f"Image '{sample.image_path}' is {iw}x{ih} but its label '{sample.label_path}' is "
                f"{lw}x{lh} (width x height); they must have the same size.",
                sample.label_path,
            )
        label = self._to_eval_convention(raw, sample.label_path)
        return {
            "id": sample.id,
            "image": image,
            "label": label,
            "image_path": str(sample.image_path),
            "label_path": str(sample.label_path),
        }

    def _to_eval_convention(self, raw: np.ndarray, path: Path) -> np.ndarray:
        meta = self.metadata
        k, ignore = meta.num_classes, meta.ignore_label
        raw64 = raw.astype(np.int64)
        if meta.reduce_zero_label:
            label = raw64 - 1
            label[raw64 == 0] = ignore
            label[raw64 == ignore] = ignore
            expected = f"0..{k} (0 = unlabelled) or the ignore label {ignore}"
        else:
            label = raw64
            expected = f"0..{k - 1} or the ignore label {ignore}"
        bad = ((label < 0) | (label >= k)) & (label != ignore)
        if bad.any():
            values = np.unique(raw64[bad])
            listed = ", ".join(str(v) for v in values[:_MAX_LISTED_VALUES])
            n_more = len(values) - _MAX_LISTED_VALUES
            more = f" and {n_more} more" if n_more > 0 else ""
            raise DatasetFileError(
                f"Label file '{path}' has values [{listed}]{more} that are not classes of "
                f"'{meta.name}' (expected {expected}). Check that the label files are "
                "the ones this dataset expects (see datasets/README.md).",
                path,
            )
        return np.ascontiguousarray(label)

    def __repr__(self) -> str:
        return (
            f"SemSegDataset({self.metadata.name!r}, {len(self)} samples, "
            f"{self.metadata.num_classes} classes, root='{self.root}')"
        )


def _load_sample_image(path: Path) -> np.ndarray:
    try:
        return load_image(path)
    except (FileNotFoundError, ValueError, OSError) as exc:
        if not Path(path).exists():
            raise DatasetFileError(f"Image file not found: '{path}'.", path) from None
        raise DatasetFileError(f"Cannot read image '{path}': {exc}", path) from exc


# --------------------------------------------------------------------------------------------
# Generic folder layout
# --------------------------------------------------------------------------------------------


def list_folder_samples(
    image_dir: str | os.PathLike, label_dir: str | os.PathLike, label_suffix: str = ".png"
) -> list[SemSegSample]:
    """Pair ``image_dir/**/{stem}.{jpg,png,...}`` with ``label_dir/**/{stem}{label_suffix}``.

    A label is looked up first at the image's relative sub-folder in ``label_dir``, then by stem
    anywhere in ``label_dir`` (when that stem is unique there). The sample id is the image path
    relative to ``image_dir`` without its extension (``"sub/img_001"``). Images without a label
    are skipped with a warning. When ``label_dir`` is ``image_dir`` (or inside it), label files
    are not taken for images.

    Args:
        image_dir: Folder searched recursively for images (see ``IMAGE_EXTENSIONS``).
        label_dir: Folder searched recursively for label files.
        label_suffix: What follows the stem in a label file name, e.g. ``".png"`` or
            ``"_labelTrainIds.png"``.

    Returns:
        The paired samples, sorted by id.

    Raises:
        FileNotFoundError: A folder does not exist.
        ValueError: No image has a label.
    """
    images_root, labels_root = Path(image_dir).expanduser(), Path(label_dir).expanduser()
    for what, folder in (("Image", images_root), ("Label", labels_root)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder not found: '{folder}'.")
    if not label_suffix:
        raise ValueError("label_suffix must not be empty (e.g. '.png' or '_labelTrainIds.png').")
    label_files = sorted(
        p
        for p in labels_root.rglob(f"*{label_suffix}")
        if p.is_file() and not _is_hidden(p, labels_root)
    )
    label_set = set(label_files)
    by_rel: dict[str, Path] = {}
    by_stem: dict[str, list[Path]] = {}
    for p in label_files:
        rel = p.relative_to(labels_root).as_posix()[: -len(label_suffix)]
        by_rel[rel] = p
        by_stem.setdefault(rel.rsplit("/", 1)[-1], []).append(p)

    samples: list[SemSegSample] = []
    unlabelled: list[str] = []
    for img in sorted(images_root.rglob("*")):
        if (
            img.suffix.lower() not in IMAGE_EXTENSIONS
            or img in label_set
            or _is_hidden(img, images_root)
            or not img.is_file()
        ):
            continue
        sid = img.relative_to(images_root).with_suffix("").as_posix()
        label = by_rel.get(sid)
        if label is None:
            same_stem = by_stem.get(img.stem, [])
            label = same_stem[0] if len(same_stem) == 1 else None
        if label is None:
            unlabelled.append(sid)
            continue
        samples.append(SemSegSample(sid, img, label))
    if unlabelled:
        shown = ", ".join(unlabelled[:5]) + (" ..." if len(unlabelled) > 5 else "")
        warnings.warn(
            f"{len(unlabelled)} image(s) in '{images_root}' have no label "
            f"'<stem>{label_suffix}' in '{labels_root}' and are skipped: {shown}",
            stacklevel=2,
        )
    if not samples:
        raise ValueError(
            f"No image in '{images_root}' has a label file '<stem>{label_suffix}' in "
            f"'{labels_root}'. Check the folders and the label suffix (label_suffix=...)."
        )
    return samples


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)
