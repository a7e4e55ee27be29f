"""Moved to :mod:`ovdense.vocabulary`; this name is the same module."""

import sys

from ... import vocabulary as _vocabulary

sys.modules[__name__] = _vocabulary
