"""The demo on videos, image sequences and cameras; temporal smoothing and flicker."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fakes import write_moving_shapes

from ovdense.utils.cli import run_cli
from ovdense.utils.visualizer import load_label_png
from ovdense.video import FlickerMeter, TemporalSmoother, flicker

CLASSES = "red square,blue disc,green grass"


def _read_video(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps


def _argv(preset, inp, out, *extra):
    inputs = [inp] if isinstance(inp, (str, Path)) else inp
    argv = ["--config", str(preset), "--classes", CLASSES, "--output", str(out)]
    for i in inputs:
        argv += ["--input", str(i)]
    return [*argv, "--device", "cpu", *extra]


def _frame_labels(folder: Path, stem: str) -> list[np.ndarray]:
    files = sorted(folder.glob(f"{stem}_*_labels.png"))
    return [load_label_png(f) for f in files]


# ---------------------------------------------------------------- flicker / smoother units


def test_flicker_on_a_hand_made_sequence():
    a = np.zeros((2, 5), np.int64)
    b = a.copy()
    b[0, :2] = 1  # 2 of 10 pixels change
    c = b.copy()
    c[1, :] = 3  # 5 of 10 change
    assert flicker([a, b, c]) == pytest.approx((2 + 5) / 20)
    assert flicker([a, a, a]) == 0.0
    assert flicker([a]) == 0.0 and flicker([]) == 0.0
    assert flicker([a, np.ones((2, 5), np.int64)]) == 1.0
    assert flicker(iter([a, b])) == pytest.approx(0.2)  # any iterable
    meter = FlickerMeter()
    for x in (a, b, c):
        meter.add(x)
    assert meter.value == pytest.approx(flicker([a, b, c]))


def test_smoother_is_an_exponential_moving_average():
    p1, p2 = torch.rand(3, 4, 5), torch.rand(3, 4, 5)
    s = TemporalSmoother(0.25)
    assert torch.equal(s.update(p1), p1)
    assert torch.allclose(s.update(p2), 0.25 * p1 + 0.75 * p2)
    s0 = TemporalSmoother(0.0)
    s0.update(p1)
    assert torch.equal(s0.update(p2), p2)
    # a new frame size starts afresh
    p3 = torch.rand(3, 2, 2)
    assert torch.equal(s.update(p3), p3)
    with pytest.raises(ValueError):
        TemporalSmoother(1.0)


# ---------------------------------------------------------------- video end to end


def test_video_overlay_keeps_frames_size_and_fps(tmp_path, tiny_preset_file, demo, capsys):
    video = write_moving_shapes(tmp_path / "clip.mp4", frames=8, size=(64, 48), fps=12.0)
    out = tmp_path / "out"
    assert demo.main(_argv(tiny_preset_file, video, out, "--save-frames")) == 0
    frames, fps = _read_video(out / "clip_overlay.mp4")
    assert len(frames) == 8
    assert frames[0].shape == (48, 64, 3)
    assert fps == pytest.approx(12.0)
    labels = _frame_labels(out, "clip")
    assert len(labels) == 8 and all(x.shape == (48, 64) and x.max() < 3 for x in labels)
    summary = json.loads((out / "clip.json").read_text())
    assert summary["frames"] == 8 and summary["size"] == [64, 48]
    assert summary["classes"] == ["red square", "blue disc", "green grass"]
    assert summary["flicker"] == pytest.approx(flicker(labels), abs=1e-6)
    assert "8 frame(s)" in capsys.readouterr().out


def test_avi_input_works(tmp_path, tiny_preset_file, demo):
    video = write_moving_shapes(tmp_path / "clip.avi", frames=5)
    assert demo.main(_argv(tiny_preset_file, video, tmp_path / "o")) == 0
    frames, _ = _read_video(tmp_path / "o" / "clip_overlay.mp4")
    assert len(frames) == 5


def test_smooth_0_equals_per_frame_images(tmp_path, tiny_preset_file, demo, moving_video):
    """--smooth 0 on a video = the demo on the video's frames as a PNG sequence (glob)."""
    out = tmp_path / "out"
    argv = _argv(tiny_preset_file, moving_video, out, "--save-frames", "--smooth", "0")
    assert demo.main(argv) == 0
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    frames, _ = _read_video(moving_video)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(frames_dir / f"f{i:03d}.png"), frame)
    seq_out = tmp_path / "seq"
    assert demo.main(_argv(tiny_preset_file, str(frames_dir / "*.png"), seq_out)) == 0
    video_labels = _frame_labels(out, "clip")
    seq_labels = [load_label_png(seq_out / f"f{i:03d}_labels.png") for i in range(len(frames))]
    assert len(video_labels) == len(seq_labels) == 8
    for a, b in zip(video_labels, seq_labels):
        np.testing.assert_array_equal(a, b)


def test_smoothing_reduces_flicker(tmp_path, tiny_preset_file, demo, moving_video):
    per_frame, smoothed = tmp_path / "a", tmp_path / "b"
    assert demo.main(_argv(tiny_preset_file, moving_video, per_frame, "--save-frames")) == 0
    argv = _argv(tiny_preset_file, moving_video, smoothed, "--save-frames", "--smooth", "0.8")
    assert demo.main(argv) == 0
    f0 = flicker(_frame_labels(per_frame, "clip"))
    f1 = flicker(_frame_labels(smoothed, "clip"))
    print(f"flicker per frame {f0:.4f}, smoothed {f1:.4f}")
    assert f1 <= f0
    assert json.loads((smoothed / "clip.json").read_text())["smooth"] == 0.8


def test_image_sequence_from_several_inputs(tmp_path, tiny_preset_file, demo):
    rng = np.random.default_rng(0)
    paths = []
    for name in ("b.png", "a.png"):
        cv2.imwrite(str(tmp_path / name), rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
        paths.append(tmp_path / name)
    out = tmp_path / "o"
    assert demo.main(_argv(tiny_preset_file, paths, out, "--smooth", "0.5")) == 0
    assert load_label_png(out / "a_labels.png").shape == (20, 30)
    assert load_label_png(out / "b_labels.png").shape == (20, 30)


# ---------------------------------------------------------------- errors


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0, err
    return err


def test_corrupt_video_is_one_line_error(tmp_path, tiny_preset_file, demo, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video at all" * 20)
    rc = run_cli(demo.main, _argv(tiny_preset_file, bad, tmp_path / "o"))
    err = _one_line_error(capsys)
    assert rc == 2 and "broken.mp4" in err and "video" in err


def test_unopenable_camera_is_one_line_error(tmp_path, tiny_preset_file, demo, capsys):
    rc = run_cli(demo.main, _argv(tiny_preset_file, [], tmp_path / "o", "--webcam", "97"))
    err = _one_line_error(capsys)
    assert rc == 2 and "camera 97" in err


def test_input_digit_means_camera(tmp_path, tiny_preset_file, demo, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file named "97" here
    rc = run_cli(demo.main, _argv(tiny_preset_file, "97", tmp_path / "o"))
    assert rc == 2 and "camera 97" in _one_line_error(capsys)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output_is_one_line_error(
    tmp_path, tiny_preset_file, demo, moving_video, capsys
):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        rc = run_cli(demo.main, _argv(tiny_preset_file, moving_video, locked / "out"))
    finally:
        locked.chmod(0o700)
    assert rc == 2 and "locked" in _one_line_error(capsys)


def test_output_under_a_file_is_one_line_error(tmp_path, tiny_preset_file, demo, capsys):
    video = write_moving_shapes(tmp_path / "clip.mp4", frames=2)
    (tmp_path / "afile").write_text("x")
    rc = run_cli(demo.main, _argv(tiny_preset_file, video, tmp_path / "afile" / "out"))
    assert rc == 2 and "afile" in _one_line_error(capsys)
    assert not (tmp_path / "afile" / "out").exists()


def test_glob_without_match_is_an_error(tmp_path, tiny_preset_file, demo, capsys):
    rc = run_cli(demo.main, _argv(tiny_preset_file, str(tmp_path / "none*.png"), tmp_path / "o"))
    assert rc == 2 and "no file matches" in _one_line_error(capsys)


def test_show_without_display_warns(tmp_path, tiny_preset_file, demo, monkeypatch, caplog):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    video = write_moving_shapes(tmp_path / "clip.mp4", frames=2)
    argv = _argv(tiny_preset_file, video, tmp_path / "o", "--show")
    with caplog.at_level("WARNING"):
        assert demo.main(argv) == 0
    assert "no display" in caplog.text


def test_smooth_out_of_range_is_refused(tmp_path, tiny_preset_file, demo, moving_video, capsys):
    rc = run_cli(demo.main, _argv(tiny_preset_file, moving_video, tmp_path / "o", "--smooth", "1"))
    assert rc == 2 and "[0, 1)" in _one_line_error(capsys)
