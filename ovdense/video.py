"""Video helpers of the demo: reading frames with OpenCV, temporal smoothing, flicker.

* :func:`open_capture` opens a video file or a camera index as a ``cv2.VideoCapture`` and
  raises a one-sentence ``ValueError`` when it cannot be opened.
* :func:`read_frames` yields its frames as RGB ``uint8`` arrays.
* :class:`TemporalSmoother` is an exponential moving average of class probabilities across
  frames (``alpha = 0``: each frame's own probabilities).
* :func:`flicker` measures how much a label sequence changes from frame to frame.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

#: File extensions read as videos by the demo (case-insensitive).
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
)

#: Frame rate written when a source does not report one (cameras often report 0).
DEFAULT_FPS = 30.0


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a video file extension (see :data:`VIDEO_EXTENSIONS`)."""
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's and FFmpeg's warnings (our own error says what went wrong)."""
    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read when a capture opens
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    old = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(old)


def open_capture(source: str | os.PathLike | int) -> Any:
    """Open a video file (a path) or a camera (an ``int`` index) with ``cv2.VideoCapture``.

    Raises:
        ValueError: the file or camera cannot be opened, or the file has no readable frame
            (one sentence, for ``run_cli``).
    """
    import cv2

    if isinstance(source, int):
        with _quiet_opencv():
            cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            cap.release()
            raise ValueError(f"cannot open camera {source}: no such camera, or it is in use.")
        return cap
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video not found: '{path}'")
    with _quiet_opencv():
        cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise ValueError(f"cannot open '{path}' as a video: the file is damaged or not a video.")
    return cap


def capture_fps(cap: Any) -> float:
    """The frame rate a capture reports, :data:`DEFAULT_FPS` when it reports none."""
    import cv2

    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if np.isfinite(fps) and fps > 0 else DEFAULT_FPS


def capture_frame_count(cap: Any) -> int | None:
    """The frame count a file capture reports (may be approximate), ``None`` when unknown."""
    import cv2

    n = float(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
    return int(n) if np.isfinite(n) and n > 0 else None


def read_frames(cap: Any, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield a capture's frames as RGB ``[H, W, 3]`` ``uint8`` arrays, until it ends (or
    ``max_frames`` were read)."""
    import cv2

    n = 0
    while max_frames is None or n < max_frames:
        ok, frame = cap.read()
        if not ok or frame is None:
            return
        n += 1
        if frame.ndim == 2:
            yield cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        else:
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class TemporalSmoother:
    """Exponential moving average of ``[C, H, W]`` class probabilities across frames.

    ``smoothed_t = alpha * smoothed_{t-1} + (1 - alpha) * probs_t``; the first frame (and any
    frame whose shape differs from the previous one, e.g. an image sequence of mixed sizes)
    starts afresh. ``alpha = 0`` gives each frame's own probabilities.
    """

    def __init__(self, alpha: float) -> None:
        if not 0.0 <= alpha < 1.0:  # NaN fails too
            raise ValueError(f"the smoothing factor must be in [0, 1), got {alpha}")
        self.alpha = float(alpha)
        self._state: torch.Tensor | None = None

    def reset(self) -> None:
        self._state = None

    def update(self, probs: torch.Tensor) -> torch.Tensor:
        """Add one frame's probabilities; returns the smoothed probabilities (a new tensor)."""
        probs = probs.float()
        if self._state is None or self._state.shape != probs.shape or self.alpha == 0.0:
            self._state = probs.clone()
        else:
            self._state = self._state.to(probs.device).mul_(self.alpha)
            self._state.add_(probs, alpha=1.0 - self.alpha)
        return self._state.clone()


def flicker(labels_seq: Iterable[np.ndarray]) -> float:
    """Fraction of pixels whose label changes between consecutive frames.

    The changed pixels of every pair of consecutive frames, divided by the pixels of all those
    pairs (the mean over pairs when the frames have one size). 0.0 with fewer than two frames.
    Pairs of frames of different sizes count every pixel of the later frame as changed.
    """
    changed = 0
    total = 0
    prev: np.ndarray | None = None
    for labels in labels_seq:
        cur = np.asarray(labels)
        if prev is not None:
            total += cur.size
            changed += int(cur.size if cur.shape != prev.shape else np.count_nonzero(cur != prev))
        prev = cur
    return changed / total if total else 0.0


class FlickerMeter:
    """:func:`flicker` computed one frame at a time (keeps only the previous frame)."""

    def __init__(self) -> None:
        self._prev: np.ndarray | None = None
        self.changed = 0
        self.total = 0

    def add(self, labels: np.ndarray) -> None:
        cur = np.asarray(labels)
        if self._prev is not None:
            self.total += cur.size
            same_shape = cur.shape == self._prev.shape
            self.changed += int(np.count_nonzero(cur != self._prev) if same_shape else cur.size)
        self._prev = cur.copy()

    @property
    def value(self) -> float:
        return self.changed / self.total if self.total else 0.0
