"""Configs: detectron2-style LazyConfig (Python files, ``instantiate``, ``key=value`` overrides)."""

from .lazy import (
    InstantiationError,
    L,
    LazyCall,
    LazyConfig,
    instantiate,
    locate,
    parse_override_value,
    target_to_str,
    to_py,
)

__all__ = [
    "InstantiationError",
    "L",
    "LazyCall",
    "LazyConfig",
    "instantiate",
    "locate",
    "parse_override_value",
    "target_to_str",
    "to_py",
]
