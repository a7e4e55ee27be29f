"""Vocabularies: the classes a model is asked about, each with one or more names."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["Vocabulary"]


class Vocabulary:
    """An ordered list of classes; each class has one or more names (synonyms).

    The score of a class is the maximum over its names (REFERENCE §2). Class ``i`` is displayed as
    its first name.

    Args:
        classes: one entry per class: a string (split on ``synonym_sep`` into names) or a sequence
            of names. ``["cat", "sofa, couch", ["tv", "monitor"]]`` is three classes.
        synonym_sep: separator between names inside a string entry, or ``None`` not to split.
            The literature differs: SCLIP/NACLIP split on ``", "``, ClearCLIP on ``","`` (keeping
            the leading space), ProxyCLIP on ``"; "``.
        strip: strip whitespace around names (``False`` reproduces ClearCLIP's parsing).

    Raises:
        ValueError: an empty vocabulary, an empty name, a duplicated class (the same names
            twice) or a name repeated inside one class. A name shared by two different classes
            is allowed with a warning (the literature's ADE-847 and COCO-Object files have some).
    """

    def __init__(
        self,
        classes: Sequence[str | Sequence[str]],
        synonym_sep: str | None = ",",
        strip: bool = True,
    ) -> None:
        if isinstance(classes, str):
            raise TypeError(
                "Vocabulary takes a list of classes, not one string; use Vocabulary.parse(text) "
                "for 'cat,dog,sofa|couch'-style strings."
            )
        parsed: list[tuple[str, ...]] = []
        for i, entry in enumerate(classes):
            if isinstance(entry, str):
                names = entry.split(synonym_sep) if synonym_sep else [entry]
            else:
                names = list(entry)
            if strip:
                names = [n.strip() for n in names]
            if not names or any(not isinstance(n, str) or not n.strip() for n in names):
                raise ValueError(f"Class {i} ({entry!r}) has an empty name.")
            dup = [n for n, c in Counter(names).items() if c > 1]
            if dup:
                raise ValueError(f"Class {i} ({entry!r}) repeats the name(s) {dup}.")
            parsed.append(tuple(names))
        if not parsed:
            raise ValueError("The vocabulary is empty: give at least one class name.")
        dup_classes = [" | ".join(c) for c, n in Counter(parsed).items() if n > 1]
        if dup_classes:
            raise ValueError(
                f"Duplicated class(es) in the vocabulary: {dup_classes}. Each class must appear "
                "once; put synonyms of one class together (e.g. 'sofa, couch')."
            )
        all_names = Counter(n for names in parsed for n in names)
        shared = [n for n, c in all_names.items() if c > 1]
        if shared:
            # NOTE: allowed because benchmark files have them (ADE20K-847 has distinct classes
            # "bag" and "bag, traveling bag, ..."; COCO-Object's background lists "bed").
            warnings.warn(
                f"Name(s) {shared[:10]} belong to more than one class; those classes will "
                "compete for the same pixels.",
                stacklevel=2,
            )
        self.classes: tuple[tuple[str, ...], ...] = tuple(parsed)

    @classmethod
    def parse(cls, text: str, class_sep: str = ",", synonym_sep: str = "|") -> Vocabulary:
        """Parse a command-line spelling: ``"cat,dog,sofa|couch"`` -> 3 classes."""
        entries = [e for e in text.split(class_sep) if e.strip()]
        return cls([e.split(synonym_sep) for e in entries])

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, synonym_sep: str | None = ", ", strip: bool = True
    ) -> Vocabulary:
        """One class per line (blank lines skipped), names split on ``synonym_sep``."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"Class-name file not found: {p}")
        lines = [ln.rstrip("\r\n") for ln in p.read_text(encoding="utf-8").splitlines()]
        return cls([ln for ln in lines if ln.strip()], synonym_sep=synonym_sep, strip=strip)

    @classmethod
    def coerce(cls, obj: Vocabulary | Sequence[str | Sequence[str]]) -> Vocabulary:
        """Accept a Vocabulary or anything its constructor takes."""
        return obj if isinstance(obj, Vocabulary) else cls(obj)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        """All names, class by class (the text encoder's queries)."""
        return [n for names in self.classes for n in names]

    @property
    def display_names(self) -> list[str]:
        """One name per class: its first, made unique where two classes share it
        (``"bag"`` and ``"bag (class 191)"``)."""
        firsts = [names[0] for names in self.classes]
        counts = Counter(firsts)
        seen: set[str] = set()
        out = []
        for i, name in enumerate(firsts):
            out.append(name if counts[name] == 1 or name not in seen else f"{name} (class {i})")
            seen.add(name)
        return out

    def name_to_class(self, device: torch.device | str | None = None) -> Tensor:
        """``[num_names]`` int64: the class index of each name in :attr:`names`."""
        idx = [i for i, names in enumerate(self.classes) for _ in names]
        return torch.tensor(idx, dtype=torch.long, device=device)

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        return iter(self.classes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.classes == other.classes

    def __hash__(self) -> int:
        return hash(self.classes)

    def __repr__(self) -> str:
        shown = ", ".join("|".join(c) for c in self.classes[:6])
        more = f", ... ({len(self)} classes)" if len(self) > 6 else ""
        return f"Vocabulary([{shown}{more}])"
