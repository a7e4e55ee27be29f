"""Arguments that fit the tiny test towers (3 blocks, a 32-d joint space) for the strategies
whose defaults need a deeper tower, a vocabulary or downloaded weights (not a test module):
CorrCLIP gets a tiny random DINO; ResCLIP reads block 1's
attention and gets a fixed random vocabulary for its semantic feedback; SC-CLIP's levels are
the two earlier blocks."""

import torch
import torch.nn.functional as F


def _tiny_query_key_dino():
    """A random DINO ViT (patch 8, CLIP's) giving CorrCLIP's query + key features."""
    from ovdense.modeling.vfm import build_vfm

    kw = {"img_size": 32, "embed_dim": 24, "depth": 2, "num_heads": 2}
    vfm = build_vfm("dino_vitb8", pretrained=False, feature="query_key", **kw)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in vfm.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return vfm.eval()


TINY_STRATEGY_KWARGS = {
    "corrclip": lambda: {"vfm": _tiny_query_key_dino()},
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
