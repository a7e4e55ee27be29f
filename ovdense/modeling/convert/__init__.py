"""Checkpoint conversion moved to :mod:`ovdense.modeling.clip` (EVA-CLIP names:
:mod:`ovdense.modeling.clip.eva_convert`); these names are kept for existing imports."""

from ..clip.eva_convert import (
    CheckpointFormatError,
    checkpoint_layout,
    convert_eva_clip_state_dict,
    create_model_from_checkpoint,
    load_eva_clip_weights,
    read_checkpoint,
)

__all__ = [
    "CheckpointFormatError",
    "checkpoint_layout",
    "convert_eva_clip_state_dict",
    "create_model_from_checkpoint",
    "load_eva_clip_weights",
    "read_checkpoint",
]
