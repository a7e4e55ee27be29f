"""Everything about getting a CLIP: loading by tag / file / hub id / config / object
(:mod:`.loading`), the architectures and weights shipped with ovdense (:mod:`.bundled`), the
kinds of image tower (:mod:`.towers`) and EVA-CLIP checkpoint conversion (:mod:`.eva_convert`).
"""

from ...utils.weights import CheckpointFormatError, WeightsUnavailableError
from .bundled import ASSETS_DIR, BUNDLED_WEIGHTS, bundled_weights, list_bundled
from .eva_convert import (
    checkpoint_layout,
    convert_eva_clip_state_dict,
    create_model_from_checkpoint,
    load_eva_clip_weights,
    read_checkpoint,
)
from .loading import load_clip, model_fingerprint, weights_need_quick_gelu
from .towers import is_eva_tower, is_vit_tower

__all__ = [
    "ASSETS_DIR",
    "BUNDLED_WEIGHTS",
    "CheckpointFormatError",
    "WeightsUnavailableError",
    "bundled_weights",
    "checkpoint_layout",
    "convert_eva_clip_state_dict",
    "create_model_from_checkpoint",
    "is_eva_tower",
    "is_vit_tower",
    "list_bundled",
    "load_clip",
    "load_eva_clip_weights",
    "model_fingerprint",
    "read_checkpoint",
    "weights_need_quick_gelu",
]
