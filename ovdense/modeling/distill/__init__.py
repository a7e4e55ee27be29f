"""Dense self-distillation of CLIP towers (CLIPSelf)."""

from .clipself import CLIPSelf, load_proposals

__all__ = ["CLIPSelf", "load_proposals"]
