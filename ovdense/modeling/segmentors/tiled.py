"""Input-size maps a strip of rows at a time: the building block of the labels-only decode
(:meth:`~ovdense.modeling.segmentors.Segmentor.decode` with ``return_probs=False``), whose memory
then does not grow with the vocabulary (docs in the ``decode`` docstring).

:class:`StripMaps` turns window maps ``[num_windows * B, K, h, w]`` (window-major, at feature
resolution) into rows ``[r0, r1)`` of the input-size map ``[B, K, r1 - r0, W]``: each window
map upsampled to its crop, summed where windows overlap and divided by the overlap count, then
resized to the input size — what :func:`~ovdense.modeling.segmentors.stitch_windows` does for
the whole image, but only for the resized rows that the strip's bilinear taps read.

The bilinear resizes are :func:`resize_rows`: along rows PyTorch's ``align_corners=False``
source-index rule (computed as ATen computes it, so the taps and weights are the same) evaluated
with elementwise tensor ops, along columns ``F.interpolate``'s linear kernel on whole rows.
Every output pixel is computed from the same inputs by the same operations whatever the strip
that holds it, so *any* strip size gives bit-identical maps (tested); against ``F.interpolate``
the values agree to float rounding (about 1e-7 relative: ATen's 2-D kernel orders its
multiply-adds differently).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DEFAULT_TILE_PIXELS", "LinearTaps", "StripMaps", "linear_taps", "resize_rows"]

#: Output pixels per strip of the labels-only decode (rows x width; at least one row). With a
#: chunk of 32 names the strip's working set is a few times ``32 x 4 x 2**17`` bytes (~64 MB),
#: whatever the image size and the vocabulary.
DEFAULT_TILE_PIXELS = 1 << 17


class LinearTaps(NamedTuple):
    """Bilinear taps along one axis: output ``i`` reads ``w0[i] * x[i0[i]] + w1[i] * x[i1[i]]``
    (``size``: the number of outputs of the whole axis)."""

    i0: Tensor
    i1: Tensor
    w0: Tensor
    w1: Tensor
    size: int

    def rows(self, start: int, stop: int, offset: int = 0) -> LinearTaps:
        """Taps of outputs ``[start, stop)``, source indices shifted down by ``offset``."""
        return LinearTaps(
            self.i0[start:stop] - offset,
            self.i1[start:stop] - offset,
            self.w0[start:stop],
            self.w1[start:stop],
            self.size,
        )


def linear_taps(in_size: int, out_size: int, device: torch.device | None = None) -> LinearTaps:
    """``F.interpolate(mode="bilinear", align_corners=False)``'s taps along one axis: source
    coordinate ``scale * (i + 0.5) - 0.5`` with ``scale = in / out`` in float32, the product in
    float64, clamped at 0 and rounded to float32 (as ATen's ``area_pixel_compute_source_index``);
    ``i1`` is ``i0 + 1`` except at the last source index."""
    if in_size <= 0 or out_size <= 0:
        raise ValueError(f"sizes must be > 0, got {in_size} -> {out_size}.")
    scale = float(torch.tensor(in_size, dtype=torch.float32) / out_size)
    src = torch.arange(out_size, dtype=torch.float64).add_(0.5).mul_(scale).sub_(0.5)
    src = src.clamp_(min=0).to(torch.float32)
    i0 = src.floor().long().clamp_(max=in_size - 1)
    w1 = (src - i0.to(torch.float32)).clamp_(0, 1)
    w0 = 1 - w1
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    return LinearTaps(i0.to(device), i1.to(device), w0.to(device), w1.to(device), out_size)


def resize_rows(x: Tensor, rows: LinearTaps | None, cols: LinearTaps | None) -> Tensor:
    """Bilinear resize of ``x [B, K, h, w]`` restricted to some output rows: ``[B, K, t, W]``.

    ``rows`` (``t`` taps into ``h``) and ``cols`` (``W`` taps into ``w``) come from
    :func:`linear_taps` (``rows`` possibly cut with :meth:`LinearTaps.rows`); ``None`` leaves
    that axis as it is (``rows=None`` keeps all rows). Rows first, then columns: the row
    pass is elementwise tensor ops on the gathered rows, the column pass ``F.interpolate``'s 1-D
    linear kernel on whole rows: every pixel goes through the same operations whatever the rows
    asked for, so cutting the output into strips of rows does not change a bit. Always a new
    tensor (safe to change in place).
    """
    if rows is None:
        v = x.clone() if cols is None else x
    else:
        v = x.index_select(2, rows.i0).mul_(rows.w0[:, None])
        v.add_(x.index_select(2, rows.i1).mul_(rows.w1[:, None]))
    if cols is None:
        return v
    # whole rows: F.interpolate's 1-D kernel computes each row alike, however many rows
    b, k, t, w = v.shape
    out = F.interpolate(v.reshape(b, k * t, w), size=cols.size, mode="linear", align_corners=False)
    return out.view(b, k, t, cols.size)


class StripMaps:
    """Rows of the stitched, input-size map of window maps (see the module docstring).

    Args:
        windows: crop boxes ``(y1, y2, x1, x2)`` in the resized image (all of one size).
        batch_size: ``B``.
        map_size: ``(h, w)`` of the window maps.
        resized_size: ``(Hr, Wr)``, the image the windows were cut from.
        image_size: ``(H, W)`` of the output.
        device: where the taps live.
    """

    def __init__(
        self,
        windows: Sequence[tuple[int, int, int, int]],
        batch_size: int,
        map_size: tuple[int, int],
        resized_size: tuple[int, int],
        image_size: tuple[int, int],
        device: torch.device,
    ) -> None:
        self.windows = list(windows)
        self.batch_size = batch_size
        self.resized_size = resized_size
        self.image_size = image_size
        y1, y2, x1, x2 = self.windows[0]
        ch, cw = y2 - y1, x2 - x1
        h, w = map_size
        self.crop_rows = None if h == ch else linear_taps(h, ch, device)
        self.crop_cols = None if w == cw else linear_taps(w, cw, device)
        (hr, wr), (hi, wi) = resized_size, image_size
        self.out_rows = None if hr == hi else linear_taps(hr, hi, device)
        self.out_cols = None if wr == wi else linear_taps(wr, wi, device)

    def source_rows(self, r0: int, r1: int) -> tuple[int, int]:
        """Rows ``[a, b)`` of the resized image that output rows ``[r0, r1)`` read."""
        if self.out_rows is None:
            return r0, r1
        return int(self.out_rows.i0[r0]), int(self.out_rows.i1[r1 - 1]) + 1

    def __call__(self, maps: Tensor, r0: int, r1: int) -> Tensor:
        """Output rows ``[r0, r1)`` of ``maps [num_windows * B, K, h, w]`` stitched and resized:
        ``[B, K, r1 - r0, W]`` (a new tensor)."""
        b = self.batch_size
        a, z = self.source_rows(r0, r1)
        wr = self.resized_size[1]
        acc = maps.new_zeros(b, maps.shape[1], z - a, wr)
        count = maps.new_zeros(1, 1, z - a, wr)
        for k, (y1, y2, x1, x2) in enumerate(self.windows):
            lo, hi = max(a, y1), min(z, y2)
            if lo >= hi:
                continue
            m = maps[k * b : (k + 1) * b]
            if self.crop_rows is None:
                m, rows = m[:, :, lo - y1 : hi - y1], None
            else:
                rows = self.crop_rows.rows(lo - y1, hi - y1)
            acc[:, :, lo - a : hi - a, x1:x2] += resize_rows(m, rows, self.crop_cols)
            count[:, :, lo - a : hi - a, x1:x2] += 1
        acc.div_(count)
        if self.out_rows is None:
            return resize_rows(acc, None, self.out_cols) if self.out_cols is not None else acc
        return resize_rows(acc, self.out_rows.rows(r0, r1, offset=a), self.out_cols)


def strip_bounds(height: int, width: int, tile_pixels: int) -> list[tuple[int, int]]:
    """Row ranges ``[r0, r1)`` of about ``tile_pixels`` output pixels each (at least one row)."""
    rows = max(1, int(tile_pixels) // max(1, width))
    return [(r, min(r + rows, height)) for r in range(0, height, rows)]
