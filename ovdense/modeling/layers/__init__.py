"""Building blocks shared by the dense backbones, the last-block strategies and the vision
foundation models: position-embedding interpolation and trace-aware per-grid caches."""

from .cache import grid_cached, is_tracing
from .pos_embed import POS_INTERP_MODES, interpolate_pos_embed

__all__ = ["POS_INTERP_MODES", "grid_cached", "interpolate_pos_embed", "is_tracing"]
