"""tools/convert_eva_clip.py: EVA-CLIP-named files in, open_clip files out (tiny random EVA02)."""

from __future__ import annotations

import open_clip
import pytest
import torch
from tiny_eva import MODEL_NAME, make_eva

from ovdense.cli import convert_eva_clip as cli
from ovdense.modeling.clip import load_clip
from ovdense.utils.cli import run_cli

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
def clip():
    return make_eva()


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
    assert run_cli(cli.main, [str(vis), str(dst), "--model", MODEL_NAME]) == 2
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
    with pytest.raises(KeyError, match="Unknown open_clip model"):
        cli.main([str(src), "--model", "EVA02-Nope"])  # raised: run_cli reports it
    assert run_cli(cli.main, [str(src), "--model", "EVA02-Nope"]) == 2
    assert "Unknown open_clip model" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    torch.save({k: v for k, v in _eva_clip(clip).items() if "blocks.1." not in k}, bad)
    assert run_cli(cli.main, [str(bad), "--model", MODEL_NAME]) == 2
    assert "missing keys" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_output_is_replaced_only_by_a_complete_file(clip, tmp_path, monkeypatch, suffix):
    src, dst = tmp_path / "eva.pt", tmp_path / f"open_clip{suffix}"
    torch.save({"state_dict": _eva_clip(clip)}, src)
    assert cli.main([str(src), str(dst), "--model", MODEL_NAME]) == 0
    good = dst.read_bytes()

    def full_disk(obj, f, *args, **kwargs):  # half a file, then the disk is full
        with open(f, "wb") as fh:
            fh.write(good[: len(good) // 2])
        raise OSError(28, "No space left on device (simulated)")

    if suffix == ".pt":
        monkeypatch.setattr(torch, "save", full_disk)
    else:
        import safetensors.torch

        monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OSError, match="simulated"):
        cli.main([str(src), str(dst), "--model", MODEL_NAME])
    assert dst.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
