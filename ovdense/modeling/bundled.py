"""Moved to :mod:`ovdense.modeling.clip.bundled`; this name is the same module."""

import sys

from .clip import bundled as _bundled

sys.modules[__name__] = _bundled
