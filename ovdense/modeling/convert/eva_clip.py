"""Moved to :mod:`ovdense.modeling.clip.eva_convert`; this name is the same module."""

import sys

from ..clip import eva_convert as _eva_convert

sys.modules[__name__] = _eva_convert
