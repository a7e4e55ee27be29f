"""A small name -> object registry with helpful errors (the detectron2 pattern)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def closest_match(name: str, choices: list[str]) -> str | None:
    """Return the choice that looks most like ``name`` (or None when nothing is close)."""
    matches = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_name_message(kind: str, name: str, choices: list[str], max_listed: int = 40) -> str:
    """The one sentence every 'unknown name' error in ovdense uses."""
    hint = closest_match(name, choices)
    msg = f"Unknown {kind} '{name}'."
    if hint is not None:
        msg += f" Did you mean '{hint}'?"
    listed = sorted(choices)
    more = f" (and {len(listed) - max_listed} more)" if len(listed) > max_listed else ""
    return msg + f" Available: {', '.join(listed[:max_listed])}{more}."


class Registry(Generic[T]):
    """Maps names to objects (usually classes or builder functions).

    The contract of what a registered object must be is documented where each registry is
    created. Unknown names raise ``KeyError`` listing the available names and the closest one.
    Registering sets the object's ``name`` attribute to its key, so the key is written once.

    Example::

        STRATEGIES = Registry("attention strategy")

        @STRATEGIES.register("maskclip")
        class MaskCLIPAttention(AttentionStrategy): ...

        MaskCLIPAttention.name  # "maskclip"
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator registering an object under ``name`` (default: its ``__name__``) and
        setting its ``name`` attribute to that key.

        An object registered again under another key (an alias) keeps the ``name`` of its
        first key. Objects that cannot take attributes are registered without one.

        Raises:
            KeyError: ``name`` is already registered.
            ValueError: the object itself (not a base class) already defines another ``name``.
        """

        def deco(obj: T) -> T:
            key = name if name is not None else obj.__name__  # type: ignore[attr-defined]
            if key in self._items:
                raise KeyError(f"{self.kind} '{key}' is already registered.")
            own = getattr(obj, "__dict__", {}).get("name")
            is_alias = any(item is obj for item in self._items.values())
            if isinstance(own, str) and own and own != key and not is_alias:
                raise ValueError(
                    f"{self.kind} '{key}': {obj!r} defines name={own!r}; the registry sets the "
                    "name from the key, so leave the attribute out."
                )
            if not is_alias:
                try:
                    obj.name = key  # type: ignore[attr-defined]
                except (AttributeError, TypeError):  # e.g. builtins, slotted objects
                    pass
            self._items[key] = obj
            return obj

        return deco

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its object (e.g. a test's temporary registration).

        Raises:
            KeyError: ``name`` is not registered (the message lists the available names).
        """
        obj = self.get(name)
        del self._items[name]
        return obj

    def get(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(unknown_name_message(self.kind, name, list(self._items)))
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
