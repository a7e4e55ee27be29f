"""Data: dataset catalog and the class-name files of the OVSS literature."""

from pathlib import Path

#: ``cls_*.txt`` files, one class per line, synonyms as written by each benchmark's literature
#: (ProxyCLIP's copies: the VOC21 / COCO-Object background line uses "; ").
CLASSNAMES_DIR = Path(__file__).parent / "classnames"

__all__ = ["CLASSNAMES_DIR"]
