"""User folders as datasets: a folder of images, a folder of label maps and the classes.

What a user folder *is* -- its checked metadata, its sample lister, the catalog name of a
``folder:<images>:<labels>:<classes.txt>`` spec -- without touching the catalog. Registering
one is :func:`ovdense.data.catalog.register_folder_dataset` (or
:func:`~ovdense.data.catalog.parse_dataset_spec` for a spec).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .metadata import SemSegMetadata
from .semseg import SemSegSample, list_folder_samples

__all__ = ["FOLDER_SPEC_PREFIX", "FolderDataset", "folder_dataset", "parse_folder_spec"]

#: What starts a ``--dataset`` spec naming user folders.
FOLDER_SPEC_PREFIX = "folder:"


@dataclass(frozen=True)
class FolderDataset:
    """A checked user folder: its metadata, where it is, and what identifies it.

    Attributes:
        metadata: The dataset's metadata.
        images: The image folder (absolute).
        labels: The label folder (absolute).
        label_suffix: What follows the stem in label file names.
    """

    metadata: SemSegMetadata
    images: Path
    labels: Path
    label_suffix: str

    @property
    def key(self) -> tuple:
        """Identifies the registration: the same key registers as a no-op."""
        return (self.metadata, self.images, self.labels, self.label_suffix)

    def lister(self) -> Callable[[Path], list[SemSegSample]]:
        """The sample lister the catalog calls (the folder it is given is ignored)."""
        images, labels, suffix = self.images, self.labels, self.label_suffix

        def list_samples(_: Path) -> list[SemSegSample]:
            return list_folder_samples(images, labels, suffix)

        return list_samples


def folder_dataset(
    name: str,
    image_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    classes: str | os.PathLike | Sequence[str | Sequence[str]],
    ignore_label: int = 255,
    reduce_zero_label: bool = False,
    background_index: int | None = None,
    label_suffix: str = ".png",
) -> FolderDataset:
    """Check a user folder and make its metadata (see
    :func:`ovdense.data.catalog.register_folder_dataset` for the arguments).

    Raises:
        FileNotFoundError: A folder or the class-name file does not exist.
        ValueError: Bad classes or label conventions.
    """
    images = Path(image_dir).expanduser().resolve()
    labels = Path(label_dir).expanduser().resolve()
    for what, folder in (("Image", images), ("Label", labels)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder of dataset '{name}' not found: '{folder}'.")
    inline: tuple[str | tuple[str, ...], ...] | None = None
    classnames_file = ""
    if isinstance(classes, (str, os.PathLike)):
        path = Path(classes).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(
                f"Class-name file of dataset '{name}' not found: '{path}' (give a file with one "
                "class per line, or a list of class names)."
            )
        classnames_file = str(path)
        lines = path.read_text(encoding="utf-8").splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        num_classes = len(lines)
        if num_classes == 0:
            raise ValueError(f"Class-name file '{path}' is empty: write one class per line.")
    else:
        inline = tuple(c if isinstance(c, str) else tuple(c) for c in classes)
        num_classes = len(inline)
        if num_classes == 0:
            raise ValueError(f"Dataset '{name}': the class list is empty.")
    meta = SemSegMetadata(
        name=name,
        classnames_file=classnames_file,
        num_classes=num_classes,
        ignore_label=ignore_label,
        background_index=background_index,
        reduce_zero_label=reduce_zero_label,
        description=f"folder dataset: images '{images}', labels '{labels}'",
        classes=inline,
    )
    meta.class_names()  # fail now, not at evaluation, on blank lines or empty names
    return FolderDataset(meta, images, labels, label_suffix)


def parse_folder_spec(spec: str) -> tuple[str, Path, Path, Path]:
    """Split a ``folder:<images>:<labels>:<classes.txt>`` spec.

    Returns:
        ``(name, images, labels, classes)``: the catalog name made from the image folder and a
        hash of the spec (``folder_imgs_1a2b3c``, the same in every process) and the three
        paths, resolved.

    Raises:
        ValueError: A malformed spec.
    """
    parts = spec[len(FOLDER_SPEC_PREFIX) :].split(":")
    if not spec.startswith(FOLDER_SPEC_PREFIX) or len(parts) != 3 or not all(parts):
        raise ValueError(
            f"Bad dataset spec '{spec}': expected 'folder:<images>:<labels>:<classes.txt>' "
            "(three paths separated by ':')."
        )
    images, labels, classes = (Path(p).expanduser().resolve() for p in parts)
    digest = hashlib.sha1(f"{images}\n{labels}\n{classes}".encode()).hexdigest()[:6]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", images.name).strip("_.") or "images"
    return f"folder_{slug}_{digest}", images, labels, classes
