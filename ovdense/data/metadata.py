"""What a semantic-segmentation dataset is: :class:`SemSegMetadata` and the class-name rules.

Class-name parsing rules (:data:`PARSE_RULES`). The ``cls_*.txt`` files hold one class per line;
the OVSS repositories read the synonyms on a line differently
(docs/protocols.md#class-name-parsing), which changes their numbers, so every rule is available by
name:

* ``"sclip"``, ``"naclip"``: split on ``", "`` and on ``"; "``, strip whitespace;
* ``"clearclip"``: split on ``","`` without stripping (``"building, edifice"`` gives
  ``"building"`` and ``" edifice"``); a background line listing several names (VOC21,
  COCO-Object) becomes the single name ``"background"``;
* ``"proxyclip"``: split on ``"; "`` only (``"building, edifice"`` stays one name);
* ``"unified"``: ovdense's own protocol, the same as ``"sclip"``: split on ``", "`` and
  ``"; "``, strip whitespace, every name kept (the background class of VOC21 / COCO-Object is
  the max over its listed names).

Imports nothing from ovdense but :mod:`ovdense.vocabulary`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..vocabulary import Vocabulary

__all__ = ["CLASSNAMES_DIR", "PARSE_RULES", "SemSegMetadata"]

#: ``cls_*.txt`` files, one class per line, synonyms as written by each benchmark's literature
#: (ProxyCLIP's copies: the VOC21 / COCO-Object background line uses "; ").
CLASSNAMES_DIR = Path(__file__).parent / "classnames"

#: Names of the class-name parsing rules (see the module docstring).
PARSE_RULES = ("sclip", "naclip", "clearclip", "proxyclip", "unified")

_SPLIT_COMMA_SEMICOLON = re.compile(r", |; ")


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
