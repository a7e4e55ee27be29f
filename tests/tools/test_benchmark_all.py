"""``ovdense benchmark --all`` / ``--int8`` and the GPU defaults (tiny model; the CUDA path's
argument handling is checked without a GPU)."""

from __future__ import annotations

import json

import pytest
import torch

from ovdense.cli import benchmark
from ovdense.utils.cli import UserError

SMALL = ["--model", "ovdense-tiny-vit", "--device", "cpu", "--strategies", "naclip"]
SMALL += ["--image-size", "48", "64", "--short-side", "64", "--window", "64", "--stride", "32"]
SMALL += ["--repeats", "1", "--onnx-classes", "4"]


def _args(*argv: str):
    return benchmark.build_parser().parse_args(list(argv))


def test_int8_section(tmp_path, capsys):
    out = tmp_path / "int8.json"
    assert benchmark.main([*SMALL, "--int8", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["sections"] == ["int8"]
    r = res["int8"]
    assert r["backend"] in ("torchao", "torch.ao") and r["int8_linear_layers"] > 0
    assert r["fp32_s"] > 0 and r["int8_s"] > 0 and r["speedup"] == r["fp32_s"] / r["int8_s"]
    assert 0 < r["max_feature_diff"] < 0.1 and r["label_agreement"] > 0.9
    assert "## int8 vs fp32 (CPU)" in capsys.readouterr().out


@pytest.mark.slow  # ~12 s of CPU, mostly the ONNX export; 45 s on a loaded 2-core machine
def test_all_sections_in_one_run(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    names = tmp_path / "names.txt"
    names.write_text("background\ncat\ndog\n")
    out = tmp_path / "all.json"
    argv = [*SMALL, "--all", "--classnames", str(names), "--demo-image-size", "96", "128"]
    argv += ["--demo-classes", "3", "--json", str(out)]
    assert benchmark.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["sections"] == ["text", "image", "memory", "onnx", "int8"]
    assert res["text"][0]["names"] == 3 and res["text"][0]["naive_padded_s"] > 0
    assert [(r["strategy"], r["precision"], r["short_side"]) for r in res["image"]] == [
        ("naclip", "fp32", 64)
    ]
    assert res["image"][0]["time_over_bound"] > 0
    assert set(res["demo_memory"]["bytes_per_pixel"]) >= {"set_image", "predict_3_classes"}
    onnx = res["onnx"]
    assert onnx["label_agreement"] == 1.0
    assert onnx["max_cosine_diff"] == pytest.approx(onnx["max_logit_diff"] / 40.0)
    printed = capsys.readouterr().out
    for title in ("## Text", "## Image side", "## Demo memory", "## ONNX Runtime", "## int8"):
        assert title in printed


def test_gpu_defaults_and_sections():
    """On CUDA: fp16 and bf16 at short sides 336 and 448; --all leaves the CPU sections out."""
    args = _args("--all")
    sections, skipped = benchmark.plan(args, "cuda")
    assert sections == ["text", "image"] and skipped == ["memory", "onnx", "int8"]
    assert args.precisions == ["fp16", "bf16"] and args.short_sides == [336, 448]
    assert (args.precision, args.short_side) == ("fp16", 336)
    args = _args("--precision", "bf16", "--short-side", "448", "--skip-text")
    assert benchmark.plan(args, "cuda") == (["image"], [])
    assert args.precisions == ["bf16"] and args.short_sides == [448]
    with pytest.raises(ValueError, match="--device cpu"):
        benchmark.plan(_args("--int8"), "cuda")
    with pytest.raises(ValueError, match="--device cpu"):
        benchmark.plan(_args("--onnx"), "cuda")


def test_cpu_defaults_and_refusals():
    args = _args("--all")
    assert benchmark.plan(args, "cpu") == (["text", "image", "memory", "onnx", "int8"], [])
    assert args.precisions == ["fp32"] and args.short_sides == [336]
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        benchmark.plan(_args("--precision", "fp16"), "cpu")
    with pytest.raises(ValueError, match="one of --all"):
        benchmark.plan(_args("--all", "--int8"), "cpu")
    with pytest.raises(SystemExit):  # argparse refuses int8 as an image-section precision
        _args("--precision", "int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(UserError, match="no CUDA GPU"):
        benchmark.main(["--model", "ovdense-tiny-vit", "--device", "cuda", "--all"])
