"""PAMR: pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020), as used by NACLIP.

Reference: N. Araslanov and S. Roth, "Single-Stage Semantic Segmentation from Image Labels",
CVPR 2020 (https://github.com/visinf/1-stage-wseg). NACLIP (Hajimiri et al., WACV 2025) applies
it to the upsampled class scores with ``num_iter=10, dilations=(8, 16)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PAMR"]

# The 8 neighbours of a 3x3 window (row, col), in the order of the reference kernels.
_NEIGHBOURS: tuple[tuple[int, int], ...] = (
    (0, 0),
    (0, 1),
    (0, 2),
    (1, 0),
    (1, 2),
    (2, 0),
    (2, 1),
    (2, 2),
)
# The full 3x3 window in raster order (the reference ``LocalStDev`` kernel).
_WINDOW: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(3) for j in range(3))


#: Elements of one stack of neighbour maps (``[g, B, C, H, W]``) in :meth:`PAMR.affinity`:
#: the neighbours are taken in groups of ``g`` maps below this (at least one).
_STACK_ELEMENTS = 1 << 22


def _shifted(
    x: Tensor, dilations: Sequence[int], offsets: Sequence[tuple[int, int]]
) -> list[Tensor]:
    """The replicate-padded neighbour maps of ``x`` (``[N, C, H, W]`` each) for every dilation
    and 3x3 kernel position in ``offsets``, dilation-major.

    Equivalent to ``F.conv2d(F.pad(x, [d] * 4, mode="replicate"), one_hot_kernel, dilation=d)``
    for each one-hot 3x3 kernel position, but without a convolution: the output at ``(y, x)``
    reads the input padded by ``d`` at ``(y + i * d, x + j * d)``, i.e. a slice (a view). ``x``
    is padded once, by the largest dilation ``D``: replicate padding by ``D`` holds the one by
    ``d <= D`` at offset ``D - d``.
    """
    h, w = x.shape[-2:]
    top = max(dilations)
    padded = F.pad(x, [top, top, top, top], mode="replicate")
    return [
        padded[..., top - d + i * d : top - d + i * d + h, top - d + j * d : top - d + j * d + w]
        for d in dilations
        for i, j in offsets
    ]


def _stacks(views: list[Tensor]) -> Iterator[Tensor]:
    """``views`` (``[B, C, H, W]`` each) stacked on a new dim 0 in groups of at most
    :data:`_STACK_ELEMENTS` elements (at least one view per group), in order: each view of a
    stack is a contiguous ``[B, C, H, W]`` again."""
    group = max(1, _STACK_ELEMENTS // max(1, views[0].numel()))
    for start in range(0, len(views), group):
        yield torch.stack(views[start : start + group])


class PAMR(nn.Module):
    """Pixel-adaptive mask refinement: propagates class scores between similar-looking pixels.

    Araslanov & Roth, "Single-Stage Semantic Segmentation from Image Labels", CVPR 2020.

    For every pixel and every dilation ``d``, the 8 neighbours at distance ``d`` (replicate
    padding at the border) get a weight from the image::

        aff_p = softmax_p( mean_c( -|I_c - I_c[p]| / (1e-8 + 0.1 * std_c) ) )

    where ``std_c`` is the (unbiased) standard deviation of channel ``c`` over the 9 window
    positions of all dilations together and the softmax runs over all ``8 * len(dilations)``
    neighbours. The masks are upsampled to the image size (bilinear, ``align_corners=True``) and
    then ``num_iter`` times replaced by the affinity-weighted average of their neighbours (the
    pixel itself is not one of them). Each step is a convex combination, so per-pixel
    probabilities stay probabilities.

    The result equals the reference implementation (``LocalAffinity*`` conv kernels) to float
    tolerance. Differences, all of them result-preserving:

    * the image affinity is computed once and the classes, which are independent, are
      propagated ``class_chunk`` at a time in place in the upsampled masks, so peak memory is
      the upsampled masks plus ``O(class_chunk * H * W)`` instead of
      ``O(8 * len(dilations) * K * H * W)``; chunking does not change a single bit;
    * the neighbour shifts are slices of a replicate-padded tensor (padded once per step, by the
      largest dilation), accumulated one at a time, the first product starting the sum;
    * half-precision inputs are computed in float32 (float64 stays float64) and the result is
      returned in the masks' dtype.

    Args:
        num_iter: propagation steps (NACLIP: 10). ``0`` returns the upsampled masks.
        dilations: neighbourhood dilations (NACLIP: ``(8, 16)``), each ``>= 1``.
        class_chunk: classes processed at once; ``None`` processes all of them together.

    Shapes:
        ``forward(image [B, C, H, W], masks [B, K, h, w]) -> [B, K, H, W]`` (``C`` is normally
        3; any number of image channels works, as in the reference).
    """

    def __init__(
        self,
        num_iter: int = 10,
        dilations: Sequence[int] = (8, 16),
        class_chunk: int | None = 64,
    ) -> None:
        super().__init__()
        if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 0:
            raise ValueError(f"num_iter must be an int >= 0, got {num_iter!r}.")
        if isinstance(dilations, int):
            dilations = (dilations,)
        dilations = tuple(dilations)
        if not dilations:
            raise ValueError("dilations must be a non-empty sequence of ints >= 1, got ().")
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dilations):
            raise ValueError(f"dilations must all be ints >= 1, got {dilations!r}.")
        if class_chunk is not None and (
            isinstance(class_chunk, bool) or not isinstance(class_chunk, int) or class_chunk < 1
        ):
            raise ValueError(f"class_chunk must be an int >= 1 or None, got {class_chunk!r}.")
        self.num_iter: int = num_iter
        self.dilations: tuple[int, ...] = dilations
        self.class_chunk: int | None = class_chunk

    @staticmethod
    def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
        """float64 stays float64; everything else (fp16, bf16, float32) is computed in float32."""
        return torch.float64 if dtype == torch.float64 else torch.float32

    def affinity(self, image: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Neighbour weights ``[B, 1, 8 * len(dilations), H, W]``, summing to 1 over dim 2.

        Args:
            image: ``[B, C, H, W]``.
            dtype: computation dtype (default: float32, or float64 for a float64 image).
        """
        if image.ndim != 4:
            raise ValueError(f"image must be [B, C, H, W], got shape {tuple(image.shape)}.")
        x = image.to(dtype or self._compute_dtype(image.dtype))

        # Unbiased std of each channel over the 9 window positions of all dilations (LocalStDev),
        # two-pass; the sums run over the positions in order, one at a time.
        window = _shifted(x, self.dilations, _WINDOW)
        n = len(window)
        total = torch.zeros_like(x)
        for s in window:
            total.add_(s)
        mean = total / n
        sq = torch.zeros_like(x)
        for stack in _stacks(window):
            for dev in (stack - mean).square_():
                sq.add_(dev)
        std = (sq / (n - 1)).sqrt()
        denom = 1e-8 + 0.1 * std

        # -|centre - neighbour| / denom, averaged over channels (LocalAffinityAbs, then mean(1)):
        # the element-wise part for a stack of neighbours at once, the mean per neighbour.
        logits = [
            term.mean(1, keepdim=True)
            for stack in _stacks(_shifted(x, self.dilations, _NEIGHBOURS))
            for term in (x - stack).abs_().neg_().div_(denom)
        ]
        return torch.softmax(torch.stack(logits, dim=2), dim=2)

    def _propagate(self, masks: Tensor, aff: Tensor) -> Tensor:
        """``num_iter`` steps of ``m <- sum_p aff_p * m[p]`` for ``masks [B, k, H, W]``.

        Each step pads ``m`` once (:func:`_shifted`) and starts the sum with the first product
        instead of adding it to zeros: the same values bit for bit as one padding per dilation
        and a zero-filled accumulator, with fewer full-size passes.
        """
        m = masks
        for _ in range(self.num_iter):
            shifted = _shifted(m, self.dilations, _NEIGHBOURS)
            m = shifted[0] * aff[:, :, 0]
            for p in range(1, len(shifted)):
                m.addcmul_(shifted[p], aff[:, :, p])
        return m

    def forward(self, image: Tensor, masks: Tensor) -> Tensor:
        """Refine ``masks [B, K, h, w]`` with ``image [B, C, H, W]``; returns ``[B, K, H, W]``.

        The output has the masks' dtype and device.
        """
        if image.ndim != 4:
            raise ValueError(f"image must be [B, C, H, W], got shape {tuple(image.shape)}.")
        if masks.ndim != 4:
            raise ValueError(f"masks must be [B, K, h, w], got shape {tuple(masks.shape)}.")
        if image.shape[0] != masks.shape[0]:
            raise ValueError(
                f"Batch sizes differ: image has {image.shape[0]}, masks have {masks.shape[0]}."
            )
        if not masks.is_floating_point():
            raise ValueError(f"masks must be a floating-point tensor, got {masks.dtype}.")
        if image.shape[1] < 1 or image.shape[-2] < 1 or image.shape[-1] < 1:
            raise ValueError(f"image must be non-empty, got shape {tuple(image.shape)}.")
        if masks.shape[-2] < 1 or masks.shape[-1] < 1:
            raise ValueError(f"masks must have a non-empty spatial size, got {tuple(masks.shape)}.")
        if image.device != masks.device:
            raise ValueError(f"image is on {image.device} but masks are on {masks.device}.")

        b, k = masks.shape[:2]
        size = (int(image.shape[-2]), int(image.shape[-1]))
        out_dtype = masks.dtype
        dtype = self._compute_dtype(out_dtype)
        if b == 0 or k == 0:
            return masks.new_zeros((b, k, *size))
        aff = self.affinity(image, dtype) if self.num_iter > 0 else None

        # Upsample all classes in one call, as the reference does: the CPU bilinear kernel's
        # rounding depends on the channel count, so per-chunk upsampling would not be bitwise
        # chunk-invariant. The propagation is (classes are independent, the affinity is shared)
        # and runs chunk by chunk, writing each result back into the upsampled buffer unless
        # autograd needs the graph, so peak memory is that buffer plus one chunk's working set.
        up = F.interpolate(masks.to(dtype), size=size, mode="bilinear", align_corners=True)
        if aff is None:
            return up.to(out_dtype)
        chunk = self.class_chunk or k
        if chunk >= k:
            return self._propagate(up, aff).to(out_dtype)
        needs_graph = torch.is_grad_enabled() and (masks.requires_grad or image.requires_grad)
        out = up.new_empty(up.shape) if needs_graph else up
        for start in range(0, k, chunk):
            out[:, start : start + chunk] = self._propagate(up[:, start : start + chunk], aff)
        return out.to(out_dtype)

    def extra_repr(self) -> str:
        return (
            f"num_iter={self.num_iter}, dilations={self.dilations}, class_chunk={self.class_chunk}"
        )
