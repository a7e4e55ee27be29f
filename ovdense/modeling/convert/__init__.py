"""Converters from third-party checkpoint layouts to the open_clip models ovdense loads."""

from .eva_clip import (
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
