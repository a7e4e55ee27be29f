"""Text side: vocabularies, prompt templates and the cached text encoder."""

from .encoder import ClassEmbeddings, TextEncoder
from .templates import TEMPLATE_SETS, resolve_templates
from .vocabulary import Vocabulary

__all__ = ["TEMPLATE_SETS", "ClassEmbeddings", "TextEncoder", "Vocabulary", "resolve_templates"]
