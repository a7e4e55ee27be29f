"""``ovdense benchmark --video-fps``: frames/s of the demo's video path (tiny model)."""

from __future__ import annotations

import json

from ovdense.cli import benchmark


def test_video_fps_is_measured(tmp_path, capsys):
    out = tmp_path / "vf.json"
    argv = ["--model", "ovdense-tiny-vit", "--video-fps", "--video-size", "48", "64"]
    argv += ["--video-frames", "3", "--short-side", "64", "--window", "64", "--stride", "32"]
    argv += ["--repeats", "1", "--device", "cpu", "--json", str(out)]
    assert benchmark.main(argv) == 0
    vf = json.loads(out.read_text())["video_fps"]
    assert vf["frames"] == 3 and vf["frame_size"] == [48, 64]
    assert vf["per_frame_fps"] > 0 and vf["batched_fps"] > 0
    assert "frames/s through predict_batch" in capsys.readouterr().out
