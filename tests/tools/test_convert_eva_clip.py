"""tools/convert_eva_clip.py: EVA-CLIP-named files in, open_clip files out (tiny random EVA02)."""

from __future__ import annotations

import json

import convert_eva_clip as cli
import open_clip
import pytest
import timm
import torch
from timm.models import register_model
from timm.models.eva import _create_eva

from ovdense.modeling.clip import load_clip

TIMM_NAME = "ovdense_test_eva02_tiny_clip"
MODEL_NAME = "ovdense-test-EVA02-tiny"

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


CONFIG = {
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

RENAMES = [  # open_clip -> EVA-CLIP, written independently of the converter
    ("attn.q_proj.bias", "attn.q_bias"),
    ("attn.v_proj.bias", "attn.v_bias"),
    ("attn.norm.", "attn.inner_attn_ln."),
    ("mlp.fc1_g.", "mlp.w1."),
    ("mlp.fc1_x.", "mlp.w2."),
    ("mlp.norm.", "mlp.ffn_ln."),
    ("mlp.fc2.", "mlp.w3."),
]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("oc_cfg") / f"{MODEL_NAME}.json"
    path.write_text(json.dumps(CONFIG))
    open_clip.add_model_config(path)
    torch.manual_seed(0)
    model = load_clip(MODEL_NAME)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("logit_scale"):
                p.copy_(0.2 * torch.randn_like(p))
    return model.eval()


def _eva_clip(model, visual=True, text=True):
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("visual.trunk."):
            if visual:
                k = "visual." + k[len("visual.trunk.") :]
                for a, b in RENAMES:
                    k = k.replace(a, b)
                out[k] = v.clone()
        elif text:
            out[k] = v.clone()
    if visual:
        out["visual.rope.freqs_cos"] = torch.zeros(16, 16)
    return out


def _outputs(model):
    torch.manual_seed(1)
    with torch.no_grad():
        return (
            model.encode_image(torch.randn(2, 3, 32, 32)),
            model.encode_text(torch.randint(0, 49408, (2, 77))),
        )


def test_full_checkpoint(clip, tmp_path, capsys):
    src, dst = tmp_path / "eva.pt", tmp_path / "open_clip.pt"
    torch.save({"state_dict": _eva_clip(clip)}, src)
    assert cli.main([str(src), str(dst), "--model", MODEL_NAME]) == 0
    assert "-> " in capsys.readouterr().out
    state = torch.load(dst, weights_only=True)
    assert set(state) == set(clip.state_dict())
    for a, b in zip(_outputs(load_clip(MODEL_NAME, checkpoint=dst)), _outputs(clip), strict=True):
        torch.testing.assert_close(a, b)
    # open_clip itself reads the output
    direct = open_clip.create_model(MODEL_NAME, pretrained=str(dst), weights_only=True)
    torch.testing.assert_close(_outputs(direct)[0], _outputs(clip)[0])


def test_visual_only_needs_text_from(clip, tmp_path, capsys):
    vis, full, dst = tmp_path / "vis.pt", tmp_path / "full.pt", tmp_path / "out.safetensors"
    torch.save({k[len("visual.") :]: v for k, v in _eva_clip(clip, text=False).items()}, vis)
    assert cli.main([str(vis), str(dst), "--model", MODEL_NAME]) == 2
    assert "--text-from" in capsys.readouterr().err and not dst.exists()
    other = load_clip(MODEL_NAME)  # another (random) text tower
    torch.save(other.state_dict(), full)  # open_clip layout works as --text-from too
    assert cli.main([str(vis), str(dst), "--model", MODEL_NAME, "--text-from", str(full)]) == 0
    got = load_clip(MODEL_NAME, checkpoint=dst)
    torch.testing.assert_close(_outputs(got)[0], _outputs(clip)[0])  # image tower from vis
    torch.testing.assert_close(_outputs(got)[1], _outputs(other)[1])  # text tower from full


def test_errors(clip, tmp_path, capsys):
    src = tmp_path / "eva.pt"
    torch.save(_eva_clip(clip), src)
    assert cli.main([str(src), "--model", "EVA02-Nope"]) == 2
    assert "Unknown open_clip model" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    torch.save({k: v for k, v in _eva_clip(clip).items() if "blocks.1." not in k}, bad)
    assert cli.main([str(bad), "--model", MODEL_NAME]) == 2
    assert "missing keys" in capsys.readouterr().err
