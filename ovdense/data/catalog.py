"""The catalog of semantic-segmentation datasets: name -> metadata + sample lister.

One home for what a benchmark *is* (its classes, ignore label, background class, label
convention) and where its files are (a layout under a data root). In the spirit of detectron2's
``DatasetCatalog`` / ``MetadataCatalog``::

    from ovdense.data import build_semseg_dataset, get_metadata

    meta = get_metadata("voc21")
    vocab = meta.vocabulary("unified")          # 21 classes, class 0 = 26 background names
    data = build_semseg_dataset("voc21", "~/datasets")
    item = data[0]                               # id, image [H, W, 3] uint8, label [H, W] int64

The built-in benchmarks are registered by :mod:`ovdense.data.builtin`; user folders with
:func:`register_folder_dataset` or a ``folder:<images>:<labels>:<classes.txt>`` spec
(:func:`parse_dataset_spec`).

Class-name parsing rules (:data:`PARSE_RULES`). The ``cls_*.txt`` files hold one class per line;
the OVSS repositories read the synonyms on a line differently (REFERENCE §2), which changes their
numbers, so every rule is available by name:

* ``"sclip"``, ``"naclip"``: split on ``", "`` and on ``"; "``, strip whitespace;
* ``"clearclip"``: split on ``","`` without stripping (``"building, edifice"`` gives
  ``"building"`` and ``" edifice"``); a background line listing several names (VOC21,
  COCO-Object) becomes the single name ``"background"``;
* ``"proxyclip"``: split on ``"; "`` only (``"building, edifice"`` stays one name);
* ``"unified"``: ovdense's own protocol, the same as ``"sclip"``: split on ``", "`` and
  ``"; "``, strip whitespace, every name kept (the background class of VOC21 / COCO-Object is
  the max over its listed names).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..modeling.text.vocabulary import Vocabulary
from ..utils.registry import unknown_name_message
from .semseg import SemSegDataset, SemSegSample, list_folder_samples

__all__ = [
    "CLASSNAMES_DIR",
    "DATASETS_ENV",
    "PARSE_RULES",
    "SemSegMetadata",
    "build_semseg_dataset",
    "generated_data_root",
    "get_instances_files",
    "get_metadata",
    "list_datasets",
    "list_instance_datasets",
    "parse_dataset_spec",
    "register_folder_dataset",
    "register_instances",
    "register_semseg",
    "resolve_data_root",
]

#: ``cls_*.txt`` files, one class per line, synonyms as written by each benchmark's literature
#: (ProxyCLIP's copies: the VOC21 / COCO-Object background line uses "; ").
CLASSNAMES_DIR = Path(__file__).parent / "classnames"

#: Environment variable read when no data root is given.
DATASETS_ENV = "OVDENSE_DATASETS"

#: Names of the class-name parsing rules (see the module docstring).
PARSE_RULES = ("sclip", "naclip", "clearclip", "proxyclip", "unified")

_LAYOUT_HINT = "See datasets/README.md for how to lay out or convert each dataset."
_SPLIT_COMMA_SEMICOLON = re.compile(r", |; ")


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SemSegMetadata:
    """What a semantic-segmentation dataset is: its classes and label conventions.

    Attributes:
        name: Catalog name, e.g. ``"voc21"``.
        classnames_file: Class-name file (one class per line): a file name under
            :data:`CLASSNAMES_DIR` (``"cls_voc21.txt"``) or an absolute path. Empty when
            ``classes`` is given.
        num_classes: Number of classes ``K``; labels are ``0..K-1`` in the evaluation convention.
        ignore_label: Label value that is not scored (255; 65535 for the uint16 datasets).
        background_index: The background class (0 for VOC21, Context60, COCO-Object), or None.
        reduce_zero_label: The label files use 0 for "unlabelled" and ``1..K`` for the classes;
            loading maps 0 to ``ignore_label`` and ``v`` to ``v - 1`` (ADE20K-150, VOC20,
            Context59).
        description: One line for listings.
        classes: Classes given inline instead of a file: one entry per class, a line (parsed by
            the rule like a file line) or a tuple of names (used as is under every rule).
        class_groups: Named groups of class indices reported separately by the evaluators
            (e.g. ``(("seen", (1, 2)), ("held_out", (3,)))``), or None.
    """

    name: str
    classnames_file: str
    num_classes: int
    ignore_label: int
    background_index: int | None
    reduce_zero_label: bool
    description: str = ""
    classes: tuple[str | tuple[str, ...], ...] | None = None
    class_groups: tuple[tuple[str, tuple[int, ...]], ...] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("A dataset needs a non-empty name.")
        if self.num_classes <= 0:
            raise ValueError(f"Dataset '{self.name}': num_classes must be > 0.")
        if 0 <= self.ignore_label < self.num_classes:
            raise ValueError(
                f"Dataset '{self.name}': ignore_label {self.ignore_label} is a class index "
                f"(0..{self.num_classes - 1}); use a value >= num_classes such as 255 (65535 "
                "for more than 255 classes)."
            )
        if self.background_index is not None and not 0 <= self.background_index < self.num_classes:
            raise ValueError(
                f"Dataset '{self.name}': background_index {self.background_index} is not a class "
                f"index (0..{self.num_classes - 1}); pass None when there is no background class."
            )
        if self.classes is None and not self.classnames_file:
            raise ValueError(f"Dataset '{self.name}': give a classnames_file or classes.")
        for group, members in self.class_groups or ():
            if not members or any(not 0 <= c < self.num_classes for c in members):
                raise ValueError(
                    f"Dataset '{self.name}': class group '{group}' must list class indices in "
                    f"0..{self.num_classes - 1}, got {members}."
                )
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(
                f"Dataset '{self.name}': {len(self.classes)} classes given for "
                f"num_classes={self.num_classes}."
            )

    @property
    def classnames_path(self) -> Path | None:
        """The class-name file as a path (None for inline classes)."""
        if self.classes is not None:
            return None
        p = Path(self.classnames_file).expanduser()
        return p if p.is_absolute() else CLASSNAMES_DIR / p

    def class_lines(self) -> list[str]:
        """One line per class, as written (line endings removed, trailing blank lines dropped).

        Returns:
            ``num_classes`` lines.

        Raises:
            FileNotFoundError: The class-name file does not exist.
            ValueError: The file has blank lines between classes or a number of classes other
                than ``num_classes``.
        """
        if self.classes is not None:
            return [c if isinstance(c, str) else ", ".join(c) for c in self.classes]
        path = self.classnames_path
        assert path is not None
        if not path.is_file():
            raise FileNotFoundError(f"Class-name file of dataset '{self.name}' not found: {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        blank = [i + 1 for i, ln in enumerate(lines) if not ln.strip()]
        if blank:
            raise ValueError(
                f"Class-name file {path} has blank line(s) {blank[:5]} between classes; each "
                "line is one class (index = line number - 1), so remove them."
            )
        if len(lines) != self.num_classes:
            raise ValueError(
                f"Class-name file {path} has {len(lines)} classes but dataset '{self.name}' has "
                f"num_classes={self.num_classes}; use the file made for this dataset."
            )
        return lines

    def class_names(self, rule: str = "unified") -> list[list[str]]:
        """The names of each class under a parsing rule.

        Args:
            rule: One of :data:`PARSE_RULES` (see the module docstring).

        Returns:
            ``num_classes`` lists of names; the score of a class is the max over its names.

        Raises:
            ValueError: Unknown rule, or a line that gives an empty name.
        """
        if rule not in PARSE_RULES:
            raise ValueError(
                f"Unknown class-name rule '{rule}'; choose one of {', '.join(PARSE_RULES)}."
            )
        out: list[list[str]] = []
        entries = self.classes if self.classes is not None else self.class_lines()
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                names = _parse_line(entry, rule, is_background=i == self.background_index)
            else:
                names = list(entry)
            if not names or any(not n.strip() for n in names):
                where = self.classnames_path or "the inline classes"
                raise ValueError(
                    f"Class {i} ({entry!r}) of dataset '{self.name}' has an empty name under "
                    f"rule '{rule}'; fix line {i + 1} of {where}."
                )
            out.append(names)
        return out

    def vocabulary(self, rule: str = "unified") -> Vocabulary:
        """The dataset's classes as a :class:`Vocabulary` (class ``i`` = label ``i``).

        Built as ``Vocabulary(class_names(rule), synonym_sep=None, strip=False)``, so names are
        not re-split. Some files have names shared by two classes (ADE20K-847, COCO-Object's
        "bed"): ``Vocabulary`` warns about them.

        Args:
            rule: One of :data:`PARSE_RULES`.

        Returns:
            A vocabulary of ``num_classes`` classes.
        """
        return Vocabulary(self.class_names(rule), synonym_sep=None, strip=False)


def _parse_line(line: str, rule: str, is_background: bool) -> list[str]:
    if rule == "proxyclip":
        return line.split("; ")
    if rule == "clearclip":
        if is_background and len(_SPLIT_COMMA_SEMICOLON.split(line.strip())) > 1:
            return ["background"]
        return line.split(",")
    # sclip, naclip, unified
    return [n.strip() for n in _SPLIT_COMMA_SEMICOLON.split(line)]


# --------------------------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    metadata: SemSegMetadata
    list_samples: Callable[[Path], list[SemSegSample]]
    default_root: str
    key: tuple | None = None  # identifies a folder registration (idempotent re-registration)
    generate: Callable[[Path], None] | None = None  # writes a generated dataset into a folder


_CATALOG: dict[str, _Entry] = {}


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
    _register(_Entry(meta, list_samples, str(default_root), generate=generate))


def _register(entry: _Entry) -> None:
    name = entry.metadata.name
    if name in _CATALOG or name in _INSTANCES:
        raise KeyError(
            f"Dataset '{name}' is already registered; choose another name "
            f"(registered: {', '.join(list_datasets())})."
        )
    _CATALOG[name] = entry


def _get_entry(name: str) -> _Entry:
    if name not in _CATALOG:
        msg = unknown_name_message("dataset", name, list(_CATALOG))
        raise KeyError(msg + " A folder of your own: 'folder:<images>:<labels>:<classes.txt>'.")
    return _CATALOG[name]


def get_metadata(name: str) -> SemSegMetadata:
    """The metadata of a registered dataset.

    Raises:
        KeyError: Unknown name (the message suggests the closest and lists the available ones).
    """
    return _get_entry(name).metadata


def list_datasets() -> list[str]:
    """The registered dataset names, sorted."""
    return sorted(_CATALOG)


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """The folder holding the datasets.

    Args:
        data_root: A folder, or None to read the ``OVDENSE_DATASETS`` environment variable.

    Returns:
        The folder (``~`` expanded).

    Raises:
        ValueError: Neither ``data_root`` nor ``OVDENSE_DATASETS`` is given.
        FileNotFoundError: The folder does not exist.
    """
    if data_root is not None and str(data_root) != "":
        source = "data root"
        root = Path(data_root).expanduser()
    else:
        env = os.environ.get(DATASETS_ENV, "")
        if not env:
            raise ValueError(
                f"No datasets folder given: pass --data-root (data_root=...) or set the "
                f"{DATASETS_ENV} environment variable to the folder holding the datasets. "
                + _LAYOUT_HINT
            )
        source = f"data root (from {DATASETS_ENV})"
        root = Path(env).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"The {source} '{root}' does not exist or is not a folder.")
    return root


def generated_data_root() -> Path:
    """Where generated datasets are written when no data root is given:
    ``$OVDENSE_DATASETS`` if set, else ``$XDG_CACHE_HOME/ovdense/datasets`` (default
    ``~/.cache/ovdense/datasets``)."""
    env = os.environ.get(DATASETS_ENV, "")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "ovdense" / "datasets"


_COMPLETE = ".complete"


def _remove_stale_generation_folders(folder: Path) -> None:
    """Remove ``.<name>.<pid>.<random>`` folders that killed generations of ``folder`` left
    (only those ovdense names so, and only when that process no longer runs)."""
    from ..utils.io import pid_alive

    pattern = re.compile(rf"^\.{re.escape(folder.name)}\.(\d+)\.[A-Za-z0-9_]+$")
    for entry in folder.parent.iterdir():
        match = pattern.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not pid_alive(int(match[1])):
            shutil.rmtree(entry, ignore_errors=True)


def materialize(
    name: str, rel: str, generate: Callable[[Path], None], data_root: str | os.PathLike | None
) -> Path:
    """The folder of a generated dataset, written by ``generate`` on first use.

    Generation writes into a temporary sibling folder renamed into place when done, so an
    interrupted run leaves no half-written dataset; concurrent processes are safe (the first
    rename wins). Only what ovdense created is ever deleted: a folder of that name without
    ovdense's completion marker belongs to someone else and is an error, never removed.

    Raises:
        FileExistsError: ``folder`` exists but was not generated by ovdense.
    """
    root = Path(data_root).expanduser() if data_root else generated_data_root()
    folder = root / rel
    if (folder / _COMPLETE).is_file():
        return folder
    if os.path.lexists(folder):
        raise FileExistsError(
            f"Cannot generate dataset '{name}' at '{folder}': something that ovdense did not "
            f"generate is already there (no '{_COMPLETE}' marker); move it away or pass another "
            "data root — ovdense never deletes what it did not create."
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_generation_folders(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.{os.getpid()}.", dir=folder.parent))
    try:
        generate(tmp)
        (tmp / _COMPLETE).write_text(name + "\n", encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / _COMPLETE).is_file():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _dataset_folder(entry: _Entry, data_root: str | os.PathLike | None) -> Path:
    name = entry.metadata.name
    if entry.generate is not None:
        return materialize(name, entry.default_root, entry.generate, data_root)
    rel = Path(entry.default_root).expanduser()
    if rel.is_absolute():
        if not rel.is_dir():
            raise FileNotFoundError(f"Folder of dataset '{name}' not found: '{rel}'.")
        return rel
    root = resolve_data_root(data_root)
    folder = root / rel
    if folder.is_dir():
        return folder
    # Accept a data root that already points at the dataset folder.
    if len(root.parts) >= len(rel.parts) and root.parts[-len(rel.parts) :] == rel.parts:
        return root
    raise FileNotFoundError(
        f"Dataset '{name}' not found: expected the folder '{folder}' ('{rel.as_posix()}' under "
        f"the data root '{root}'). {_LAYOUT_HINT}"
    )


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
    entry = _get_entry(name)
    folder = _dataset_folder(entry, data_root)
    samples = sorted(entry.list_samples(folder), key=lambda s: s.id)
    if not samples:
        raise ValueError(f"Dataset '{name}' has no samples in '{folder}'. {_LAYOUT_HINT}")
    if limit is not None:
        samples = samples[:limit]
    return SemSegDataset(entry.metadata, samples, folder)


# --------------------------------------------------------------------------------------------
# Instance datasets (COCO-format JSON + image folder), e.g. for region classification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _InstancesEntry:
    default_root: str
    json_name: str
    image_dir: str
    generate: Callable[[Path], None] | None


_INSTANCES: dict[str, _InstancesEntry] = {}


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
    if name in _INSTANCES or name in _CATALOG:
        raise KeyError(f"Dataset '{name}' is already registered; choose another name.")
    _INSTANCES[name] = _InstancesEntry(str(default_root), json_name, image_dir, generate)


def list_instance_datasets() -> list[str]:
    """The registered instance dataset names, sorted."""
    return sorted(_INSTANCES)


def get_instances_files(name: str, data_root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The ``(annotation JSON, image folder)`` of a registered instance dataset (a generated
    one is written on first use).

    Raises:
        KeyError: Unknown name (the closest is suggested).
        FileNotFoundError: The files are not on disk (the message names the expected path).
    """
    if name not in _INSTANCES:
        raise KeyError(unknown_name_message("instance dataset", name, list(_INSTANCES)))
    entry = _INSTANCES[name]
    rel = Path(entry.default_root).expanduser()
    if entry.generate is not None:
        folder = materialize(name, entry.default_root, entry.generate, data_root)
    elif rel.is_absolute():
        folder = rel
    else:
        folder = resolve_data_root(data_root) / rel
    json_path, images = folder / entry.json_name, folder / entry.image_dir
    for what, path in (("annotation file", json_path), ("image folder", images)):
        if not path.exists():
            raise FileNotFoundError(
                f"Dataset '{name}': {what} not found; expected '{path}'. {_LAYOUT_HINT}"
            )
    return json_path, images


# --------------------------------------------------------------------------------------------
# User folders
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
    key = (meta, images, labels, label_suffix)
    existing = _CATALOG.get(name)
    if existing is not None and existing.key == key:
        return existing.metadata

    def list_samples(_: Path) -> list[SemSegSample]:
        return list_folder_samples(images, labels, label_suffix)

    _register(_Entry(meta, list_samples, str(images), key))
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
    if not spec.startswith("folder:"):
        _get_entry(spec)
        return spec
    parts = spec[len("folder:") :].split(":")
    if len(parts) != 3 or not all(parts):
        raise ValueError(
            f"Bad dataset spec '{spec}': expected 'folder:<images>:<labels>:<classes.txt>' "
            "(three paths separated by ':')."
        )
    images, labels, classes = (Path(p).expanduser().resolve() for p in parts)
    digest = hashlib.sha1(f"{images}\n{labels}\n{classes}".encode()).hexdigest()[:6]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", images.name).strip("_.") or "images"
    name = f"folder_{slug}_{digest}"
    register_folder_dataset(name, images, labels, classes)
    return name
