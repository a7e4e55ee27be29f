"""demo/demo.py's command line: bad values are refused before the model is loaded, every user
error is one line on stderr (``error: ...``) with exit code 2, through ``run_cli``."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovdense.utils.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def setup(tmp_path, demo, monkeypatch):
    """An input image, and a demo whose model must not be built."""
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(tmp_path / "a.png")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(demo, "build_segmentor", no_model)
    return tmp_path


def _base(tmp_path):
    return ["--input", str(tmp_path / "a.png"), "--classes", "cat", "--output",
            str(tmp_path / "out")]  # fmt: skip


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith("error: "), captured.err
    assert captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    return captured.err


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--alpha", "5"], "argument --alpha: must be a number in [0, 1], got 5"),
        (["--alpha", "-0.1"], "argument --alpha: must be a number in [0, 1], got -0.1"),
        (["--alpha", "nan"], "argument --alpha: must be a number in [0, 1], got nan"),
        (["--alpha", "x"], "argument --alpha: expected a number in [0, 1], got 'x'"),
        (["--prob-thd", "2"], "argument --prob-thd: must be a number in [0, 1], got 2"),
        (
            ["--max-image-pixels", "-1"],
            "argument --max-image-pixels: must be a whole number of pixels >= 0",
        ),
        (
            ["--max-image-pixels", "lots"],
            "argument --max-image-pixels: must be a whole number of pixels >= 0",
        ),
    ],
)
def test_bad_values_are_refused_before_the_model(setup, demo, capsys, extra, expected):
    assert run_cli(demo.main, _base(setup) + extra) == 2
    assert _one_line_error(capsys).startswith(f"error: {expected}")


def test_good_edge_values_are_accepted(demo):
    args = demo.parse_args(
        [
            "--input",
            "x",
            "--classes",
            "c",
            "--output",
            "o",
            "--alpha",
            "1",
            "--prob-thd",
            "0",
            "--max-image-pixels",
            "none",
        ]
    )
    assert (args.alpha, args.prob_thd, args.max_image_pixels) == (1.0, 0.0, 0)
    args = demo.parse_args(["--input", "x", "--classes", "c", "--output", "o",
                            "--max-image-pixels", "2e8"])  # fmt: skip
    assert args.max_image_pixels == 200_000_000 and args.alpha == 0.5


def test_missing_argument_is_one_line(setup, demo, capsys):
    assert run_cli(demo.main, ["--classes", "cat"]) == 2
    assert "required: --input, --output" in _one_line_error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_one_line(setup, demo, capsys):
    assert run_cli(demo.main, _base(setup) + ["--device", "cuda"]) == 2
    assert "no CUDA GPU" in _one_line_error(capsys)


def test_unknown_device_is_one_line(setup, demo, capsys):
    assert run_cli(demo.main, _base(setup) + ["--device", "gpu0"]) == 2
    assert "Unknown device 'gpu0'" in _one_line_error(capsys)


def test_binary_classes_file_is_one_line_naming_it(setup, demo, capsys):
    png = setup / "a.png"
    argv = ["--input", str(png), "--classes-file", str(png), "--output", str(setup / "out")]
    assert run_cli(demo.main, argv) == 2
    err = _one_line_error(capsys)
    assert str(png) in err and "UTF-8" in err


def test_output_that_is_a_file_is_one_line(setup, demo, capsys):
    (setup / "out").write_text("a file")
    assert run_cli(demo.main, _base(setup)) == 2
    assert _one_line_error(capsys) == (
        f"error: --output '{setup / 'out'}' is a file, not a folder; give a folder.\n"
    )


def test_output_under_a_file_is_one_line(setup, demo, capsys):
    (setup / "f").write_text("a file")
    argv = _base(setup)
    argv[-1] = str(setup / "f" / "out")
    assert run_cli(demo.main, argv) == 2
    assert _one_line_error(capsys) == (
        f"error: a file stands where a folder is expected: {setup / 'f'}\n"
    )


def test_read_only_output_folder_is_one_line(setup, demo, capsys, monkeypatch):
    # os.access is what a read-only folder (or file system) answers; root ignores chmod.
    real = os.access
    locked = setup / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real(p, mode))
    argv = _base(setup)
    argv[-1] = str(locked / "out")
    assert run_cli(demo.main, argv) == 2
    assert _one_line_error(capsys) == f"error: permission denied: {locked}\n"


def test_missing_input_is_one_line(setup, demo, capsys):
    argv = _base(setup)
    argv[1] = str(setup / "nope.png")
    assert run_cli(demo.main, argv) == 2
    assert _one_line_error(capsys) == f"error: input not found: '{setup / 'nope.png'}'\n"


def test_script_exits_through_run_cli(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "demo.py"), *_base(tmp_path), "--alpha", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "error: argument --alpha: must be a number in [0, 1], got 5 (see --help)\n"
    )
