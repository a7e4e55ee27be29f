"""tools/train_tiny_clip.py: a two-iteration run trains, exports fp16 weights and reports."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from ovdense.modeling.bundled import bundled_weights
from ovdense.modeling.clip import load_clip

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("ttc", ROOT / "tools" / "train_tiny_clip.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_two_iterations_export_and_report(tmp_path):
    out, weights = tmp_path / "run", tmp_path / "tiny.pt"
    rc = _tool().main(
        [
            "--output",
            str(out),
            "--export",
            str(weights),
            "--eval-images",
            "30",
            "train.max_iter=2",
            "lr_scheduler.max_iter=2",
            "lr_scheduler.warmup_iters=1",
            "dataloader.batch_size=4",
            "dataloader.num_workers=0",
            "dataloader.dataset.length=8",
        ]
    )
    assert rc == 0
    state = torch.load(weights, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    report = json.loads((out / "zero_shot.json").read_text())
    assert report["all"]["n"] == 30
    assert report["seen"]["n"] + report["held_out"]["n"] == 30
    # the export is what the Trainer's last checkpoint holds, in fp16
    ckpt = torch.load(out / "model_0000002.pt", weights_only=True)["model"]
    trained = ckpt["clip.visual.conv1.weight"]
    assert torch.equal(state["visual.conv1.weight"], trained.half())
    clip = load_clip("ovdense-tiny-vit", checkpoint=weights)
    assert torch.equal(clip.visual.conv1.weight.half(), trained.half())


def test_bundled_tags():
    assert bundled_weights("ViT-B-16", "openai") is None
    assert bundled_weights("ovdense-tiny-vit", None) is None
    path = bundled_weights("ovdense-tiny-vit", "shapes")
    assert path is not None and path.is_file()


def test_missing_bundled_file_says_what_to_do(monkeypatch, tmp_path):
    import ovdense.modeling.bundled as bundled

    monkeypatch.setattr(bundled, "_WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="train_tiny_clip"):
        load_clip("ovdense-tiny-vit", "shapes")
