"""Dense self-distillation of CLIP towers (CLIPSelf) and CLIP-DINOiser's head training."""

from .clip_dinoiser import CLIPDINOiserDistill
from .clipself import CLIPSelf, load_proposals

__all__ = ["CLIPDINOiserDistill", "CLIPSelf", "load_proposals"]
