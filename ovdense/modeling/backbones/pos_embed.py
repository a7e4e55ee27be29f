"""Compatibility re-exports: position-embedding interpolation lives in
:mod:`ovdense.modeling.layers.pos_embed`."""

from ..layers.pos_embed import POS_INTERP_MODES, interpolate_pos_embed

__all__ = ["POS_INTERP_MODES", "interpolate_pos_embed"]
