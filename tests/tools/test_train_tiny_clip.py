"""tools/train_tiny_clip.py: a two-iteration run trains, exports fp16 weights and reports;
nothing is written into the installed package unless --update-bundled says so."""

import importlib
import json
from pathlib import Path

import pytest
import torch

import ovdense
from ovdense.modeling.bundled import bundled_weights
from ovdense.modeling.clip import load_clip
from ovdense.modeling.contrastive import ContrastiveCLIP
from ovdense.utils.cli import UserError, run_cli

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(ovdense.__file__).resolve().parent
TINY = [
    "train.max_iter=2",
    "lr_scheduler.max_iter=2",
    "lr_scheduler.warmup_iters=1",
    "dataloader.batch_size=4",
    "dataloader.num_workers=0",
    "dataloader.dataset.length=8",
]


def _tool():
    """``ovdense.cli.train_tiny_clip`` (``tools/train_tiny_clip.py`` is a wrapper around it)."""
    return importlib.import_module("ovdense.cli.train_tiny_clip")


@pytest.fixture(autouse=True)
def exports(monkeypatch):
    """Every export path, recorded; a write into the real installed package fails the test
    (instead of replacing the shipped weights)."""
    real = ContrastiveCLIP.save_open_clip_checkpoint
    paths: list[Path] = []

    def guarded(self, path, *args, **kwargs):
        paths.append(Path(path).resolve())
        if paths[-1].is_relative_to(PACKAGE):
            raise AssertionError(f"wrote into the installed package: {path}")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(ContrastiveCLIP, "save_open_clip_checkpoint", guarded)
    return paths


def _fake_zero_shot(clip, num_images):
    return {"all": {"n": num_images, "acc": 0.0}}


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


def test_default_export_goes_to_the_run_folder(tmp_path, exports, monkeypatch):
    tool = _tool()
    monkeypatch.setattr(tool, "shapes_zero_shot", _fake_zero_shot)
    bundled = bundled_weights("ovdense-tiny-vit", "shapes")
    before = bundled.read_bytes()
    out = tmp_path / "run"
    assert tool.main(["--output", str(out), "--eval-images", "2", *TINY]) == 0
    assert exports == [(out / "ovdense-tiny-vit_shapes.pt").resolve()]
    state = torch.load(out / "ovdense-tiny-vit_shapes.pt", weights_only=True)
    trained = torch.load(out / "model_0000002.pt", weights_only=True)["model"]
    assert torch.equal(state["visual.conv1.weight"], trained["clip.visual.conv1.weight"].half())
    assert bundled.read_bytes() == before


def test_export_into_the_package_is_refused_before_training(tmp_path, monkeypatch, capsys):
    tool = _tool()

    def no_training(*args, **kwargs):
        raise AssertionError("trained before refusing the export path")

    monkeypatch.setattr(tool, "Trainer", no_training)
    target = PACKAGE / "assets" / "weights" / "ovdense-tiny-vit_shapes.pt"
    args = ["--output", str(tmp_path / "run"), "--export", str(target), *TINY]
    with pytest.raises(UserError, match="--update-bundled"):
        tool.main(args)
    assert run_cli(tool.main, args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "inside the installed ovdense package" in err


def test_update_bundled_writes_the_shipped_file(tmp_path, exports, monkeypatch):
    tool = _tool()
    # a stand-in package folder, so that the real shipped weights stay as they are
    fake_pkg = tmp_path / "site-packages" / "ovdense"
    shipped = fake_pkg / "assets" / "weights" / "ovdense-tiny-vit_shapes.pt"
    monkeypatch.setattr(tool, "PACKAGE_DIR", fake_pkg)
    monkeypatch.setattr(tool, "BUNDLED_EXPORT", shipped)
    monkeypatch.setattr(tool, "shapes_zero_shot", _fake_zero_shot)
    args = ["--output", str(tmp_path / "run"), "--eval-images", "2", *TINY]
    with pytest.raises(UserError, match="--update-bundled"):
        tool.main([*args, "--export", str(shipped)])
    assert tool.main([*args, "--update-bundled"]) == 0
    assert exports == [shipped.resolve()] and shipped.is_file()
    assert not (tmp_path / "run" / "ovdense-tiny-vit_shapes.pt").exists()
