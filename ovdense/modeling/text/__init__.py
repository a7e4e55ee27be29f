"""Text side: vocabularies, prompt templates and the cached text encoder."""

from .encoder import ClassEmbeddings, TextEncoder
from .templates import TEMPLATE_SETS, resolve_templates
from .vocabulary import BACKGROUND_NAMES, SYNONYM_SEPARATORS, Vocabulary, is_background_class

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
