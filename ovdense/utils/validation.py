"""Argument checks shared by constructors: one sentence naming the argument and what it takes.

Constructors built from configs call these, so a bad ``key=value`` override fails when the config
is built (the config system prefixes the node's path, e.g. ``model``), before any weights load.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Literal, overload

__all__ = ["check_fraction", "check_int", "check_real"]


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if not isinstance(value, str) else repr(value)


@overload
def check_int(
    name: str, value: Any, *, minimum: int = 1, allow_none: Literal[False] = False
) -> int: ...
@overload
def check_int(name: str, value: Any, *, minimum: int = 1, allow_none: bool) -> int | None: ...
def check_int(name: str, value: Any, *, minimum: int = 1, allow_none: bool = False) -> int | None:
    """``value`` as an ``int >= minimum`` (``None`` passes when ``allow_none``).

    Raises:
        ValueError: ``"window: expected an integer >= 1 or None, got -1."``
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name}: expected an integer >= {minimum}{none}, got {_describe(value)}.")
    return int(value)


@overload
def check_real(
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    allow_none: Literal[False] = False,
) -> float: ...
@overload
def check_real(
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    allow_none: bool,
) -> float | None: ...
def check_real(
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``value`` as a finite ``float`` in ``[low, high]`` (``(low, high]`` when ``low_open``).

    Raises:
        ValueError: ``"logit_scale: expected a number > 0, got 'fast'."``
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        parts = []
        if low != -math.inf:
            parts.append(f"{'>' if low_open else '>='} {low:g}")
        if high != math.inf:
            parts.append(f"<= {high:g}")
        bound = f" {' and '.join(parts)}" if parts else ""
        none = " or None" if allow_none else ""
        raise ValueError(f"{name}: expected a number{bound}{none}, got {_describe(value)}.")
    return float(value)


@overload
def check_fraction(name: str, value: Any, *, allow_none: Literal[False] = False) -> float: ...
@overload
def check_fraction(name: str, value: Any, *, allow_none: bool) -> float | None: ...
def check_fraction(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """``value`` as a ``float`` in ``[0, 1]`` (thresholds on probabilities or area fractions)."""
    return check_real(name, value, low=0.0, high=1.0, allow_none=allow_none)
