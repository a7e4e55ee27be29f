"""A tiny EVA02-CLIP for the tests (not a test module): patch 8, 3 blocks, width 64, 4 heads,
RoPE, sub-LN, SwiGLU with its norm — the structure of ``eva02_base_patch16_clip_224`` — registered
in timm and open_clip under test-only names on import; every weight is random.

``tests/`` is on ``sys.path`` under pytest (rootdir conftest), so tests ``from tiny_eva import
make_eva, MODEL_NAME``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip
import timm
import torch
from timm.models import register_model
from timm.models.eva import _create_eva

from ovdense.modeling.clip import load_clip

TIMM_NAME = "ovdense_test_eva02_tiny_clip"
MODEL_NAME = "ovdense-test-EVA02-tiny"

EVA_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {
        "image_size": 32,
        "timm_model_name": TIMM_NAME,
        "timm_model_pretrained": False,
        "timm_pool": "token",
        "timm_proj": None,
    },
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    "custom_text": True,
}

if not timm.models.is_model(TIMM_NAME):

    @register_model
    def ovdense_test_eva02_tiny_clip(pretrained: bool = False, **kwargs):
        args = dict(
            img_size=32,
            patch_size=8,
            embed_dim=64,
            depth=3,
            num_heads=4,
            qkv_fused=False,
            mlp_ratio=4 * 2 / 3,
            swiglu_mlp=True,
            scale_mlp=True,
            scale_attn_inner=True,
            use_rot_pos_emb=True,
            ref_feat_shape=(4, 4),
            global_pool=kwargs.pop("global_pool", "token"),
        )
        return _create_eva(TIMM_NAME, pretrained=pretrained, **dict(args, **kwargs))


if MODEL_NAME not in open_clip.list_models():
    _cfg = Path(tempfile.mkdtemp(prefix="ovdense_tiny_eva_")) / f"{MODEL_NAME}.json"
    _cfg.write_text(json.dumps(EVA_CONFIG))
    open_clip.add_model_config(_cfg)


def make_eva(seed: int = 0) -> torch.nn.Module:
    """A random tiny EVA02-CLIP (norm weights around 1, other weights ~ N(0, 0.2²))."""
    torch.manual_seed(seed)
    clip = load_clip(MODEL_NAME)
    with torch.no_grad():
        for name, p in clip.named_parameters():
            if name.endswith("logit_scale"):
                continue
            if p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return clip.eval()
