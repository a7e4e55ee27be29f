"""``ovdense benchmark --text-only``: the three text paths agree and are timed (tiny model)."""

from __future__ import annotations

import json

from ovdense.cli import benchmark
from ovdense.data import CLASSNAMES_DIR


def test_text_paths_agree_and_are_reported(tmp_path, capsys):
    out = tmp_path / "text.json"
    files = [str(CLASSNAMES_DIR / "cls_voc21.txt"), str(CLASSNAMES_DIR / "cls_context59.txt")]
    argv = ["--model", "ovdense-tiny-vit", "--text-only", "--device", "cpu"]
    argv += ["--classnames", *files, "--json", str(out)]
    assert benchmark.main(argv) == 0
    rows = json.loads(out.read_text())["text"]
    assert [r["classnames"] for r in rows] == ["cls_voc21.txt", "cls_context59.txt"]
    assert rows[1]["names"] == 59 and rows[1]["prompts"] == 59 * 80
    for r in rows:
        assert r["prefix_shared"] and r["cached_equal"]
        # all three paths are exact: normalised embeddings agree to float rounding
        assert r["prefix_max_abs_diff"] <= 1e-6 and r["max_abs_diff"] <= 1e-6
        assert r["trimmed_s"] > 0 and r["prefix_s"] > 0 and r["naive_padded_s"] > 0
    printed = capsys.readouterr().out
    assert "template prefixes shared" in printed and "x the trimmed path" in printed
