"""``ovdense benchmark --catseg``: CAT-Seg's head timed at two vocabulary sizes (tiny model)."""

from __future__ import annotations

import json

from ovdense.cli import benchmark


def test_catseg_head_is_measured_per_vocabulary_size(tmp_path, capsys):
    out = tmp_path / "cs.json"
    argv = ["--model", "ovdense-tiny-vit", "--catseg", "--catseg-classes", "3", "7"]
    argv += ["--catseg-geometry", "192", "192", "128", "--image-size", "48", "64"]
    argv += ["--repeats", "1", "--device", "cpu", "--json", str(out)]
    assert benchmark.main(argv) == 0
    rows = json.loads(out.read_text())["catseg"]
    assert [r["classes"] for r in rows] == [3, 7]
    # 48 x 64 -> 192 x 192: one window of 192 pixels, and the whole image
    assert all(r["windows"] == 2 for r in rows)
    for r in rows:
        assert r["backbone_s"] > 0 and r["head_s"] > 0 and r["peak_mem_mb"] >= 0
        assert abs(r["images_per_s"] - 1 / (r["backbone_s"] + r["head_s"])) < 1e-9
    # the head's work grows with the vocabulary (its cost volume and aggregation are per class)
    assert rows[1]["head_gflops"] > 2 * rows[0]["head_gflops"] > 0
    assert "| 7 |" in capsys.readouterr().out
