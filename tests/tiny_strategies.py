"""Arguments that fit the tiny test towers (3 blocks, a 32-d joint space) for the strategies
whose defaults need a deeper tower or a vocabulary (not a test module): ResCLIP reads block 1's
attention and gets a fixed random vocabulary for its semantic feedback; SC-CLIP's levels are
the two earlier blocks."""

import torch
import torch.nn.functional as F

TINY_STRATEGY_KWARGS = {
    "resclip": lambda: {
        "rcs_layers": (1,),
        "temp_thd": 0.0,
        "text_embeds": F.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(5))),
    },
    "scclip": lambda: {
        "pre_adjust_idx": 1,
        "post_adjust_idx": 0,
        "multi_start_idx": 0,
        "multi_end_idx": 2,
    },
}


def tiny_strategy_kwargs(name: str) -> dict:
    """Constructor arguments of strategy ``name`` for the tiny towers (``{}`` for most)."""
    make = TINY_STRATEGY_KWARGS.get(name)
    return make() if make is not None else {}
