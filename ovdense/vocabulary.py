"""Vocabularies: the classes a model is asked about, each with one or more names.

A ground-floor module (it imports only the standard library and torch), so that both
:mod:`ovdense.data` (a dataset's classes) and :mod:`ovdense.modeling` (the text encoder) can use
it; :mod:`ovdense.modeling.text.vocabulary` is the same module under its old name.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["BACKGROUND_NAMES", "SYNONYM_SEPARATORS", "Vocabulary", "is_background_class"]

#: Names that mark a class as "background" (case-insensitive): thresholds send uncertain pixels
#: to such a class, and CLIP-DINOiser's background rule needs one.
BACKGROUND_NAMES = frozenset({"background", "bg", "backdrop"})

#: The synonym syntax, the same everywhere a class is written as one string (a Python list
#: item, a line of a class file, one class of ``--classes``): names are separated by ``|``,
#: and in list items and file lines also by ``,``. ``"sofa|couch"`` and ``"sofa, couch"`` are
#: one class with two names. (On the command line ``,`` separates classes, so use ``|`` there.)
SYNONYM_SEPARATORS = ("|", ",")


def is_background_class(names: Sequence[str]) -> bool:
    """True when one of a class's names is a background word (:data:`BACKGROUND_NAMES`)."""
    return any(n.strip().casefold() in BACKGROUND_NAMES for n in names)


def _split(entry: str, synonym_sep: str | None) -> list[str]:
    if synonym_sep is None:
        return [entry]
    names = [entry]
    for sep in dict.fromkeys(("|", synonym_sep)):  # "|" always, then the entry separator
        names = [part for n in names for part in n.split(sep)]
    return names


class Vocabulary:
    """An ordered list of classes; each class has one or more names (synonyms).

    The score of a class is the maximum over its names
    (docs/protocols.md#scores-synonyms-and-logit-scale). Class ``i`` is displayed as its first name.

    Args:
        classes: one entry per class: a string (split into names on ``|`` and on
            ``synonym_sep``) or a sequence of names. ``["cat", "sofa, couch", "tv|monitor"]`` is
            three classes, the last two with two names each (:data:`SYNONYM_SEPARATORS`).
        synonym_sep: separator between names inside a string entry besides ``|``, or ``None``
            not to split at all (names taken verbatim). The literature differs: SCLIP/NACLIP
            split on ``", "``, ClearCLIP on ``","`` (keeping the leading space), ProxyCLIP on
            ``"; "``.
        strip: strip whitespace around names (``False`` reproduces ClearCLIP's parsing).

    Raises:
        ValueError: an empty vocabulary, an empty name, a duplicated class (the same names
            twice, also when they differ only by upper/lower case: CLIP's tokenizer lowercases,
            so both would get the same embedding) or a name repeated inside one class. A name
            shared by two different classes is allowed with a warning (the literature's
            ADE-847 and COCO-Object files have some), also when it differs only by case.
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
                names = _split(entry, synonym_sep)
            else:
                names = list(entry)
            if strip:
                names = [n.strip() for n in names]
            if not names or any(not isinstance(n, str) or not n.strip() for n in names):
                raise ValueError(f"Class {i} ({entry!r}) has an empty name.")
            dup = [n for n, c in Counter(n.casefold() for n in names).items() if c > 1]
            if dup:
                raise ValueError(f"Class {i} ({entry!r}) repeats the name(s) {dup}.")
            parsed.append(tuple(names))
        if not parsed:
            raise ValueError("The vocabulary is empty: give at least one class name.")
        folded = [tuple(sorted(n.casefold() for n in c)) for c in parsed]
        groups: dict[tuple[str, ...], list[str]] = {}
        for c, key in zip(parsed, folded):
            groups.setdefault(key, []).append(" | ".join(c))
        dup_classes = [v if len(set(v)) > 1 else v[0] for v in groups.values() if len(v) > 1]
        if dup_classes:
            raise ValueError(
                f"Duplicated class(es) in the vocabulary: {dup_classes}. Each class must appear "
                "once (upper/lower case does not count: CLIP's tokenizer lowercases); put "
                "synonyms of one class together (e.g. 'sofa|couch')."
            )
        owners: dict[str, set[str]] = {}
        for synonyms in parsed:
            for n in set(synonyms):
                owners.setdefault(n.casefold(), set()).add(n)
        counts = Counter(n.casefold() for names in parsed for n in set(names))
        shared = [" / ".join(sorted(owners[k])) for k, c in counts.items() if c > 1]
        if shared:
            # NOTE: allowed because benchmark files have them (ADE20K-847 has distinct classes
            # "bag" and "bag, traveling bag, ..."; COCO-Object's background lists "bed").
            by_case = any(" / " in n for n in shared)
            warnings.warn(
                f"Name(s) {shared[:10]} belong to more than one class"
                + (
                    " (CLIP's tokenizer lowercases, so case does not tell them apart)"
                    if by_case
                    else ""
                )
                + "; those classes will compete for the same pixels.",
                stacklevel=2,
            )
        self.classes: tuple[tuple[str, ...], ...] = tuple(parsed)

    @classmethod
    def parse(cls, text: str, class_sep: str = ",", synonym_sep: str = "|") -> Vocabulary:
        """Parse a command-line spelling: ``"cat,dog,sofa|couch"`` -> 3 classes (classes on
        ``class_sep``, synonyms on ``synonym_sep``)."""
        entries = [e for e in text.split(class_sep) if e.strip()]
        return cls([e.split(synonym_sep) for e in entries])

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, synonym_sep: str | None = ",", strip: bool = True
    ) -> Vocabulary:
        """One class per line (blank lines skipped), names split on ``|`` and ``synonym_sep``
        (the same syntax as a Python list item: ``sofa, couch`` or ``sofa|couch``).

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not UTF-8 text (e.g. an image given by mistake), naming it.
        """
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"Class-name file not found: {p}")
        data = p.read_bytes()
        try:
            if b"\x00" in data[:8192]:
                raise UnicodeDecodeError("utf-8", data[:1], 0, 1, "NUL byte")
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError(
                f"Class-name file {p} is not a UTF-8 text file (one class per line expected)."
            ) from None
        lines = [ln.rstrip("\r\n") for ln in text.splitlines()]
        return cls([ln for ln in lines if ln.strip()], synonym_sep=synonym_sep, strip=strip)

    @classmethod
    def coerce(cls, obj: Vocabulary | Sequence[str | Sequence[str]]) -> Vocabulary:
        """Accept a Vocabulary or anything its constructor takes."""
        return obj if isinstance(obj, Vocabulary) else cls(obj)

    @property
    def background_index(self) -> int | None:
        """Index of the first class named like background (:data:`BACKGROUND_NAMES`), or None."""
        for i, names in enumerate(self.classes):
            if is_background_class(names):
                return i
        return None

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
