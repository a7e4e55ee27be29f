"""Per-grid caches that step aside while ``torch.export`` / ``torch.compile`` trace a model."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["grid_cached", "is_tracing"]

_PLAIN = (Tensor, torch.nn.Parameter)

_T = TypeVar("_T", bound="Tensor | None")


def is_tracing(*tensors: Tensor) -> bool:
    """True while ``torch.export``, ``torch.compile`` (dynamo) or ``torch.jit`` trace the code,
    or when one of ``tensors`` is not a plain tensor (a fake / functional tensor of a tracer).

    Caches keyed by Python values must not be read or filled then: a hit would bake a stored
    tensor into the graph as a constant, a miss would store a tracer's tensor for later eager
    calls, and keys built from ``data_ptr()`` fail on fake tensors.
    """
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    if compiling is not None and compiling():
        return True
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    return any(type(t) not in _PLAIN for t in tensors)


def grid_cached(
    cache: dict[Any, _T],
    key: Hashable,
    compute: Callable[[], _T],
    max_entries: int = 32,
) -> _T:
    """``cache[key]``, computed (without autograd) on a miss; the cache is emptied past
    ``max_entries`` entries. Used for per-grid position / rotary embeddings and attention biases.

    While tracing (:func:`is_tracing`) the value is computed on every call and the cache is
    neither read nor written, so exported graphs compute it from the parameters.
    """
    if is_tracing():
        return compute()
    if key not in cache:
        if len(cache) > max_entries:
            cache.clear()
        with torch.no_grad():
            cache[key] = compute()
    return cache[key]
