"""Text side: vocabularies, prompt templates and the cached text encoder.

:class:`Vocabulary` lives in :mod:`ovdense.vocabulary` (the data side uses it too); it is
re-exported here, and :mod:`ovdense.modeling.text.vocabulary` is that module under its old name.
"""

from ...vocabulary import BACKGROUND_NAMES, SYNONYM_SEPARATORS, Vocabulary, is_background_class
from .encoder import ClassEmbeddings, TextEncoder
from .templates import TEMPLATE_SETS, resolve_templates

__all__ = [
    "BACKGROUND_NAMES",
    "SYNONYM_SEPARATORS",
    "TEMPLATE_SETS",
    "ClassEmbeddings",
    "TextEncoder",
    "Vocabulary",
    "is_background_class",
    "resolve_templates",
]
