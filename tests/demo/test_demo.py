"""demo/demo.py end to end with a tiny random CLIP built from a config file."""

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdense.utils.cli import run_cli
from ovdense.utils.visualizer import load_label_png

ROOT = Path(__file__).resolve().parents[2]


def _demo():
    """The demo's module, ``ovdense.cli.demo`` (``demo/demo.py`` is a wrapper around it)."""
    return importlib.import_module("ovdense.cli.demo")


def _images(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(folder / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (41, 23), dtype=np.uint8)).save(folder / "b.png")
    (folder / "broken.png").write_bytes(b"not an image")


def test_demo_on_a_folder(tmp_path, tiny_preset_file, capsys):
    _images(tmp_path / "in")
    out = tmp_path / "out"
    rc = _demo().main(
        [
            "--config",
            str(tiny_preset_file),
            "--input",
            str(tmp_path / "in"),
            "--classes",
            "cat,dog,sofa|couch,狗",
            "--output",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    text = capsys.readouterr()
    assert "skipped" in text.out + text.err and "broken.png" in text.out + text.err
    labels = load_label_png(out / "a_labels.png")
    assert labels.shape == (30, 50) and labels.max() < 4
    assert load_label_png(out / "b_labels.png").shape == (41, 23)
    overlay = np.asarray(Image.open(out / "a_overlay.jpg"))
    assert overlay.shape[0] >= 30 and overlay.shape[1] > 50  # legend panel on the right
    summary = json.loads((out / "a.json").read_text(encoding="utf-8"))
    assert summary["classes"] == ["cat", "dog", "sofa", "狗"]
    fractions = np.bincount(labels.ravel(), minlength=4) / labels.size
    assert sum(summary["present"].values()) == pytest.approx(1.0, abs=1e-4)
    for name, frac in summary["present"].items():
        assert frac == pytest.approx(fractions[summary["classes"].index(name)], abs=1e-4)


def test_demo_background_class(tmp_path, tiny_preset_file):
    _images(tmp_path / "in")
    rc = _demo().main(
        [
            "--config",
            str(tiny_preset_file),
            "--input",
            str(tmp_path / "in" / "a.jpg"),
            "--classes",
            "cat,dog",
            "--prob-thd",
            "0.99",
            "--output",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 0
    summary = json.loads((tmp_path / "o" / "a.json").read_text())
    assert summary["classes"][0] == "background"
    assert load_label_png(tmp_path / "o" / "a_labels.png").max() <= 2


def test_demo_background_named_otherwise_is_class_0(tmp_path, tiny_preset_file):
    """--background "sky|wall": class 0 is the background whatever its names."""
    _images(tmp_path / "in")
    argv = ["--config", str(tiny_preset_file), "--input", str(tmp_path / "in" / "a.jpg")]
    argv += ["--classes", "cat,dog", "--background", "sky|wall", "--prob-thd", "0.99"]
    assert _demo().main([*argv, "--output", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "a.json").read_text())
    assert summary["classes"] == ["sky", "cat", "dog"]
    # three classes: no pixel reaches probability 0.99, so every pixel is background
    assert (load_label_png(tmp_path / "o" / "a_labels.png") == 0).all()


def test_demo_prob_thd_uses_the_background_class_given(tmp_path, tiny_preset_file):
    """--classes "cat,background,dog" --prob-thd: that class is the background (no second one
    is added); low-confidence pixels go to it, at its own index."""
    _images(tmp_path / "in")
    argv = ["--config", str(tiny_preset_file), "--input", str(tmp_path / "in" / "a.jpg")]
    argv += ["--classes", "cat,background,dog", "--prob-thd", "0.99"]
    assert _demo().main([*argv, "--output", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "a.json").read_text())
    assert summary["classes"] == ["cat", "background", "dog"]
    # three classes: no pixel reaches probability 0.99, so every pixel is class 1
    assert (load_label_png(tmp_path / "o" / "a_labels.png") == 1).all()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--classes", "cat,dog,cat"], "Duplicated class"),
        (["--classes", ","], "empty"),
        (["--classes", "cat", "--input", "/no/such/file.jpg"], "input not found"),
        (["--classes", "cat", "model.logit_scal=3"], "logit_scale"),
    ],
)
def test_demo_errors_are_one_line(tmp_path, tiny_preset_file, capsys, argv, message):
    _images(tmp_path / "in")
    base = [
        "--config",
        str(tiny_preset_file),
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "o"),
    ]
    rc = run_cli(_demo().main, base + argv)
    err = capsys.readouterr().err
    assert rc == 2 and message in err
    assert "Traceback" not in err


def test_demo_offline_weights_message(tmp_path, capsys):
    _images(tmp_path / "in")
    rc = run_cli(
        _demo().main,
        [
            "--config",
            "naclip",
            "--input",
            str(tmp_path / "in"),
            "--classes",
            "cat",
            "--output",
            str(tmp_path / "o"),
        ],
    )
    err = capsys.readouterr().err
    assert rc == 2 and "checkpoint" in err
    assert err.count("\n") == 1


def test_demo_label_png_colours_follow_the_class_names(tmp_path, tiny_preset_file):
    """The label PNG's palette is the overlay's: stable colours per class name."""
    from ovdense.utils.labels import palette_for

    _images(tmp_path / "in")
    argv = ["--config", str(tiny_preset_file), "--input", str(tmp_path / "in" / "a.jpg")]
    assert _demo().main([*argv, "--classes", "cat,dog", "--output", str(tmp_path / "o")]) == 0
    im = Image.open(tmp_path / "o" / "a_labels.png")
    assert im.mode == "P"
    pal = np.array(im.getpalette()[:6], dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(pal, palette_for(["cat", "dog"]))
