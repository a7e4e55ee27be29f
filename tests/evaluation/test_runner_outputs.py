"""run_eval's output folder: fingerprint of what made the predictions, --overwrite, the lock,
stale temporaries, atomic outputs, "nothing evaluated", default folder names (issue #10)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes import write_ade_layout
from PIL import Image

from ovdense.evaluation import runner
from ovdense.evaluation.base import json_safe
from ovdense.evaluation.runner import run_eval


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture()
def ade(tmp_path, tiny_preset):
    """Four random images + labels in the ADE20K layout; returns (data_root, preset_factory)."""
    root = write_ade_layout(tmp_path / "data")
    return root, tiny_preset


def _run(preset, root, out, **kw):
    kw.setdefault("device", "cpu")
    kw.setdefault("progress", False)
    return run_eval(str(preset), "ade20k_150", data_root=str(root), output=out, **kw)


def _preds(out: Path) -> dict[str, list]:
    from ovdense.utils.visualizer import load_label_png

    return {p.name: load_label_png(p).tolist() for p in sorted((out / "preds").glob("*.png"))}


# -- 1. fingerprint ----------------------------------------------------------------------------
def test_other_settings_refuse_to_reuse_predictions(ade, tmp_path):
    root, preset = ade
    naclip = preset("naclip")
    out = tmp_path / "out"
    assert _run(naclip, root, out)["num_images"] == 4
    naclip_preds = _preds(out)
    fp = json.loads((out / "fingerprint.json").read_text())
    assert fp["protocol"] == "paper" and fp["dataset"]["name"] == "ade20k_150"
    assert "strategy: naclip" in fp["config"]
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ValueError) as info:
        _run(naclip, root, out, overrides=["model.strategy=vanilla"])
    msg = str(info.value)
    assert "model.strategy: naclip -> vanilla" in msg and "--overwrite" in msg
    assert str(out) in msg and len(msg.splitlines()) == 1
    assert isinstance(info.value, runner.OutputMismatchError)
    # nothing was touched by the refused run
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert len(list((out / "preds").glob("*.png"))) == 4

    # --overwrite: the old predictions are deleted, the numbers equal a run in a fresh folder
    fresh = _run(naclip, root, tmp_path / "fresh", overrides=["model.strategy=vanilla"])
    over = _run(naclip, root, out, overrides=["model.strategy=vanilla"], overwrite=True)
    assert over["resumed_images"] == 0
    assert _preds(out) == _preds(tmp_path / "fresh") != naclip_preds
    assert json_safe(over["metrics"]) == json_safe(fresh["metrics"])
    assert "strategy: vanilla" in (out / "config.yaml").read_text()
    # and the folder now resumes for vanilla
    again = _run(naclip, root, out, overrides=["model.strategy=vanilla"])
    assert again["resumed_images"] == 4
    assert json_safe(again["metrics"]) == json_safe(fresh["metrics"])


def test_limit_is_not_part_of_the_fingerprint(ade, tmp_path, capsys):
    root, preset = ade
    out = tmp_path / "out"
    part = _run(preset("sclip"), root, out, limit=2)
    assert part["num_images"] == 2
    assert "resumed" not in capsys.readouterr().out
    full = _run(preset("sclip"), root, out)
    assert full["num_images"] == 4 and full["resumed_images"] == 2
    assert "resumed 2 of 4 images" in capsys.readouterr().out


def test_predictions_of_unknown_origin_refuse(ade, tmp_path):
    root, preset = ade
    out = tmp_path / "out"
    (out / "preds").mkdir(parents=True)
    Image.fromarray(np.zeros((30, 44), np.uint8)).save(out / "preds" / "ADE_val_00000000.png")
    with pytest.raises(ValueError, match="no fingerprint.json.*--overwrite"):
        _run(preset("sclip"), root, out)
    res = _run(preset("sclip"), root, out, overwrite=True)
    assert res["resumed_images"] == 0  # the stray prediction was deleted, not scored


def test_overwrite_deletes_only_files_ovdense_wrote(ade, tmp_path):
    root, preset = ade
    out = tmp_path / "out"
    _run(preset("sclip"), root, out, limit=1)
    (out / "notes.txt").write_text("mine")
    (out / "preds" / "mine.jpg").write_text("mine")
    _run(preset("naclip"), root, out, limit=1, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "preds" / "mine.jpg").read_text() == "mine"
    assert sorted(p.name for p in (out / "preds").glob("*.png")) == ["ADE_val_00000000.png"]


def _fake_seg(ids):
    import torch

    class Clip(torch.nn.Module):
        pass

    seg = torch.nn.Module()
    for i, ident in enumerate(ids):
        clip = Clip()
        clip.ovdense_id = ident
        seg.add_module(f"clip{i}", clip)
    return seg


def test_fingerprint_covers_weights_checkpoint_files_dataset_and_version(tmp_path, monkeypatch):
    from ovdense.config import LazyConfig

    head = tmp_path / "head.pt"
    head.write_bytes(b"1234")
    cfg = LazyConfig.apply_overrides(
        runner.resolve_eval_config("naclip", "voc21"), ["+model.head_checkpoint=" + str(head)]
    )
    base = runner.output_fingerprint(cfg, _fake_seg(["ViT-B-16:openai"]), "voc21", "/d", "paper")
    assert base["weights"] == ["ViT-B-16:openai"]
    assert str(head.resolve()) in base["files"]["model.head_checkpoint"]

    def diff(**changes):
        kw = {"seg": _fake_seg(["ViT-B-16:openai"]), "root": "/d", "protocol": "paper"}
        kw.update(changes)
        new = runner.output_fingerprint(cfg, kw["seg"], "voc21", kw["root"], kw["protocol"])
        return runner.fingerprint_differences(base, new)

    assert diff() == []
    assert diff(seg=_fake_seg(["ViT-B-16:/w/a.pt:9:1"])) == [
        "CLIP weights: ViT-B-16:openai -> ViT-B-16:/w/a.pt:9:1"
    ]
    assert diff(root="/e") == ["dataset root: /d -> /e"]
    head.write_bytes(b"123456")  # another file at the same path
    (d,) = diff()
    assert d.startswith("model.head_checkpoint: ") and ":4:" in d and ":6:" in d
    head.write_bytes(b"1234")
    monkeypatch.setattr(runner, "__version__", "99.0")
    assert any(d.startswith("ovdense version: ") and d.endswith("-> 99.0") for d in diff())


def test_unreadable_fingerprint_refuses(ade, tmp_path):
    root, preset = ade
    out = tmp_path / "out"
    _run(preset("sclip"), root, out, limit=1)
    (out / "fingerprint.json").write_text("{half")
    with pytest.raises(runner.OutputMismatchError, match="unreadable fingerprint.json"):
        _run(preset("sclip"), root, out, limit=1)


# -- 6. CLIP weights: one rule for every tool --------------------------------------------------
def test_checkpoint_keeps_the_tag_naming_its_architecture():
    ckpt = "/w/ViT-B-16.bin"
    cfg = runner.resolve_eval_config("naclip", "voc21", checkpoint=ckpt)
    assert (cfg.model.clip.checkpoint, cfg.model.clip.pretrained) == (ckpt, "openai")
    cfg = runner.resolve_eval_config("naclip", "voc21", pretrained="laion2b_s34b_b88k")
    assert cfg.model.clip.pretrained == "laion2b_s34b_b88k" and "checkpoint" not in cfg.model.clip
    cfg = runner.resolve_eval_config(
        "naclip", "voc21", pretrained="laion2b_s34b_b88k", checkpoint=ckpt
    )
    assert (cfg.model.clip.checkpoint, cfg.model.clip.pretrained) == (ckpt, "laion2b_s34b_b88k")
    cfg = runner.resolve_eval_config("naclip", "voc21", model="ViT-L-14", checkpoint=ckpt)
    assert cfg.model.clip.model_name == "ViT-L-14" and cfg.model.clip.pretrained is None
    # overrides come last
    cfg = runner.resolve_eval_config(
        "naclip", "voc21", "paper", ["model.clip.pretrained=None"], checkpoint=ckpt
    )
    assert cfg.model.clip.pretrained is None


def test_run_eval_passes_the_weights_to_the_config(ade, tmp_path, monkeypatch):
    root, preset = ade
    seen = {}

    class Stop(Exception):
        pass

    def instantiate(node):
        seen.update(checkpoint=node.clip.checkpoint, pretrained=node.clip.pretrained)
        raise Stop

    monkeypatch.setattr(runner, "instantiate", instantiate)
    out = tmp_path / "out"
    with pytest.raises(Stop):
        run_eval(
            "naclip",
            "ade20k_150",
            data_root=str(root),
            output=out,
            device="cpu",
            checkpoint="/w/x.bin",
        )
    assert seen == {"checkpoint": "/w/x.bin", "pretrained": "openai"}
    assert not (out / runner.LOCK_NAME).exists()


# -- lock --------------------------------------------------------------------------------------
def test_live_lock_refuses_a_second_run(ade, tmp_path):
    root, preset = ade
    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = out / runner.LOCK_NAME
        lock.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(ValueError) as info:
            _run(preset("sclip"), root, out)
        msg = str(info.value)
        assert str(lock) in msg and str(sleeper.pid) in msg and len(msg.splitlines()) == 1
        assert isinstance(info.value, runner.OutputLockedError)
        assert lock.is_file() and not (out / "results.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_lock_is_taken_over(ade, tmp_path):
    root, preset = ade
    out = tmp_path / "out"
    out.mkdir()
    lock = out / runner.LOCK_NAME
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with pytest.warns(UserWarning, match="stale lock"):
        res = _run(preset("sclip"), root, out)
    assert res["num_images"] == 4
    assert not lock.exists()  # released at the end


def test_lock_is_held_during_the_run_and_released_on_error(ade, tmp_path, monkeypatch):
    root, preset = ade
    out = tmp_path / "out"
    seen = []
    real = runner.SemSegEvaluator.process

    def process(self, pred, label):
        content = json.loads((out / runner.LOCK_NAME).read_text())
        seen.append((content["pid"], content["host"]))
        return real(self, pred, label)

    monkeypatch.setattr(runner.SemSegEvaluator, "process", process)
    _run(preset("sclip"), root, out, limit=1)
    assert seen == [(os.getpid(), socket.gethostname())]
    assert not (out / runner.LOCK_NAME).exists()

    def boom(self, pred, label):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.SemSegEvaluator, "process", boom)
    with pytest.raises(KeyboardInterrupt):
        _run(preset("sclip"), root, out)
    assert not (out / runner.LOCK_NAME).exists()


# -- 2. stale temporaries and atomic outputs ---------------------------------------------------
def test_remove_stale_temporaries(tmp_path):
    from ovdense.utils.io import remove_stale_temporaries, temporary_sibling

    dead = _dead_pid()
    stale = [tmp_path / f".a.png.{dead}.png", tmp_path / f".results.json.{dead}.tmp"]
    live = [temporary_sibling(tmp_path / "b.json"), tmp_path / f".c.png.{os.getppid()}.png"]
    other = [tmp_path / f"a.{dead}.tmp", tmp_path / ".hidden", tmp_path / f".x.{dead}"]
    for p in stale + live + other:
        p.write_text("x")
    (tmp_path / f".d.{dead}.tmp").mkdir()  # a folder: not ours
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert all(not p.exists() for p in stale)
    assert all(p.exists() for p in live + other) and (tmp_path / f".d.{dead}.tmp").is_dir()
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_run_removes_stale_temporaries_of_killed_runs(ade, tmp_path):
    root, preset = ade
    out = tmp_path / "out"
    dead = _dead_pid()
    (out / "preds").mkdir(parents=True)
    junk = [
        out / "preds" / f".ADE_val_00000000.png.{dead}.png",
        out / f".results.json.{dead}.tmp",
        out / f".config.yaml.{dead}.yaml",
    ]
    for p in junk:
        p.write_text("half")
    mine = out / f".keep.{os.getpid()}.tmp"
    mine.write_text("x")
    _run(preset("sclip"), root, out, limit=1)
    assert not any(p.exists() for p in junk) and mine.exists()


def test_outputs_are_replaced_not_written_in_place(ade, tmp_path):
    """A hard link to an output keeps the old content when the output is replaced atomically
    (written in place, both names would show the new content)."""
    root, preset = ade
    out = tmp_path / "out"
    out.mkdir()
    names = ("results.json", "results.md", "config.yaml", "fingerprint.json")
    for name in names:
        (tmp_path / f"old_{name}").write_text("old")
        os.link(tmp_path / f"old_{name}", out / name)
    _run(preset("sclip"), root, out, limit=1)
    for name in names:
        assert (tmp_path / f"old_{name}").read_text() == "old", name
        assert (out / name).read_text() != "old"


# -- 3. nothing evaluated ----------------------------------------------------------------------
def test_every_image_skipped_is_an_error_and_writes_no_results(ade, tmp_path):
    root, preset = ade
    lab_dir = root / "ADEChallengeData2016/annotations/validation"
    for f in lab_dir.glob("*.png"):
        Image.fromarray(np.zeros((7, 7), np.uint8)).save(f)
    out = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        _run(preset("sclip"), root, out)
    msg = str(info.value)
    assert msg.startswith("no image could be evaluated: 4 of 4 skipped, first reason: ")
    assert "ADE_val_00000000" in msg and len(msg.splitlines()) == 1
    assert isinstance(info.value, runner.NothingEvaluatedError)
    assert not (out / "results.json").exists() and not (out / "results.md").exists()
    assert not (out / runner.LOCK_NAME).exists()


# -- default output folders --------------------------------------------------------------------
def test_output_names_never_collide():
    names = {
        c: runner.output_name(c)
        for c in ("naclip", "maskclip", "shapes/maskclip", "seg/proxyclip_vitb16_dinov2")
    }
    assert names == {
        "naclip": "naclip",
        "maskclip": "maskclip",
        "shapes/maskclip": "shapes_maskclip",
        "seg/proxyclip_vitb16_dinov2": "seg_proxyclip_vitb16_dinov2",
    }
    assert runner.output_name("seg/naclip_vitb16") == "naclip"  # the same file as the alias
    assert runner.output_name("/some/where/my_config.py") == "my_config"
    assert runner.default_output_dir("shapes/maskclip", "paper", "shapes_seg") == Path(
        "output/eval/shapes_maskclip_paper/shapes_seg"
    )


def test_default_output_folder_is_named_after_the_full_preset(tmp_path, monkeypatch):
    import ovdense.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "VAL_IMAGES", 2)
    monkeypatch.chdir(tmp_path)
    res = run_eval(
        "shapes/maskclip",
        "shapes_seg",
        data_root=str(tmp_path / "data"),
        device="cpu",
        progress=False,
    )
    folder = tmp_path / "output/eval/shapes_maskclip_paper/shapes_seg"
    assert Path(res["config"]).resolve() == (folder / "config.yaml").resolve()
    assert json.loads((folder / "results.json").read_text())["num_images"] == 2
    assert not (tmp_path / "output/eval/maskclip_paper").exists()


def test_threshold_on_a_benchmark_without_background_is_an_error(ade, tmp_path):
    """ADE20K has no background class: a prob_thd there must not relabel pixels as class 0."""
    root, preset = ade
    with pytest.raises(ValueError, match="no class of this vocabulary is named background"):
        _run(preset("naclip"), root, tmp_path / "out", overrides=["model.prob_thd=0.5"])
