"""The segmentor: parts in slots, one inference protocol
(docs/protocols.md#common-inference-protocol).

:class:`Segmentor` is composed of

* ``backbone``: a dense backbone, ``images [B, 3, H, W] (normalised) -> DenseFeatures``;
* ``refiner`` (optional): ``(DenseFeatures, images) -> (DenseFeatures, {name: aux map})``, e.g.
  CLIP-DINOiser's affinity pooling with its saliency map ``"background"`` (registry
  :data:`~ovdense.modeling.refiners.REFINERS`);
* ``head``: ``(dense [B, D, h, w], embeds [N, D]) -> scores [B, N, h, w]``, the cosine head by
  default (registry :data:`~ovdense.modeling.heads.SEG_HEADS`); a head may declare that it
  needs per-template embeddings or intermediate block outputs, and may answer at a finer
  resolution (contract in the registry's docstring, e.g. CAT-Seg's head);
* ``text_encoder``: vocabulary -> class-name embeddings;
* the decoding policy: ``logit_scale``, softmax over names, max over synonyms, thresholds,
  PAMR, an optional ``saliency_rule`` (CLIP-DINOiser's background rule, applied as
  ``background_rule`` says) and the ``decode_order``;
* ``post_refiner`` (optional): ``(images [B, 3, H, W] in [0, 1], probs [B, C, H, W]) -> probs
  [B, C, H, W]``, a refinement of the input-size class probabilities before the thresholds and
  the argmax, e.g. :class:`ovdense.sam.refine.SAMRefiner` (Trident's SAM refinement).
* ``mask_source`` (optional): an image's class-agnostic masks (``[H, W, 3]`` uint8 RGB ->
  ``[N, H, W]`` bool, :class:`ovdense.sam.mask_source.MaskSource`), painted into one region map
  per image: given to a strategy that reads regions (CorrCLIP, cropped like the windows) and to
  the ``label_refiner``.
* ``label_refiner`` (optional): ``(labels [B, H, W], regions [B, H, W]) -> labels``, applied
  last (registry :data:`~ovdense.modeling.refiners.LABEL_REFINERS`, e.g. CorrCLIP's region
  vote).
* ``aggregator`` (optional): turns on the *splice-then-segment* mode (Trident): the windows'
  last-block tokens are spliced into one map per image, ``aggregator(tokens [B, C, h, w],
  images [B, 3, H, W] in [0, 1]) -> [B, C, h', w']`` mixes them over the whole image, and the
  result is projected and classified as one whole-image map (registry
  :data:`~ovdense.modeling.refiners.AGGREGATORS`, e.g. Trident's SAM affinity).

It owns what is common to every method: short-side resize, sliding windows (batched), window
stitching (:func:`stitch_windows`, the one implementation for logits, probabilities and any
auxiliary map), upsampling, synonyms and thresholds. Presets build it from an open_clip model:
:class:`~ovdense.modeling.segmentors.TrainingFreeSegmentor`,
:class:`~ovdense.modeling.segmentors.CLIPDINOiserSegmentor`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...utils.regions import masks_to_region_map
from ...utils.validation import check_fraction, check_int, check_real
from ..backbones import DenseBackbone
from ..backbones.base import DenseFeatures
from ..heads import build_seg_head, max_over_synonyms
from ..strategies import REGIONS, TEXT_EMBEDS
from ..text import BACKGROUND_NAMES, ClassEmbeddings, TextEncoder, Vocabulary, is_background_class
from .tiled import DEFAULT_TILE_PIXELS, StripMaps, strip_bounds

__all__ = [
    "BACKGROUND_RULES",
    "DECODE_ORDERS",
    "PRECISIONS",
    "ImageFeatures",
    "LabelRules",
    "SaliencyRule",
    "SegmentationOutput",
    "Segmentor",
    "apply_background_rule",
    "check_unit_images",
    "pad_to_multiple",
    "rescale_size",
    "sliding_windows",
    "splice_ratio",
    "splice_size",
    "stitch_windows",
]

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "auto")
#: Values of ``decode_order``: see :class:`Segmentor`.
DECODE_ORDERS = ("ovdense", "paper", "sigmoid")
DecodeOrder = Literal["ovdense", "paper", "sigmoid"]
#: Values of ``background_rule``: see :class:`Segmentor`.
BACKGROUND_RULES = (None, True, False, "force")


def rescale_size(
    height: int, width: int, short_side: int | None, max_long_side: int | None = 2048
) -> tuple[int, int]:
    """mmseg ``Resize(scale=(max_long_side, short_side), keep_ratio=True)``: the largest scale
    with ``short <= short_side`` and ``long <= max_long_side`` (up or down), rounded half up."""
    if short_side is None:
        return height, width
    short, long = min(height, width), max(height, width)
    scale = short_side / short
    if max_long_side is not None:
        scale = min(scale, max_long_side / long)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def sliding_windows(
    height: int, width: int, window: int | None, stride: int | None
) -> list[tuple[int, int, int, int]]:
    """mmseg ``slide_inference`` crops ``(y1, y2, x1, x2)`` covering an image.

    Windows are ``window`` pixels square (clipped to the image), ``stride`` apart, the last one
    in each direction shifted back to end at the border. ``window=None`` gives the whole image.
    All windows of one image have the same size.
    """
    if window is None:
        return [(0, height, 0, width)]
    stride = stride or window
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be > 0, got {window}, {stride}.")
    h_grids = max(height - window + stride - 1, 0) // stride + 1
    w_grids = max(width - window + stride - 1, 0) // stride + 1
    out = []
    for hi in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi * stride, wi * stride
            y2, x2 = min(y1 + window, height), min(x1 + window, width)
            y1, x1 = max(y2 - window, 0), max(x2 - window, 0)
            out.append((y1, y2, x1, x2))
    return out


def stitch_windows(
    maps: Tensor,
    windows: Sequence[tuple[int, int, int, int]],
    batch_size: int,
    resized_size: tuple[int, int],
    output_size: tuple[int, int] | None = None,
    chunk: int = 8,
    activation: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Per-window maps -> one map per image (mmseg ``slide_inference``).

    Each window map is upsampled (bilinear, ``align_corners=False``) to its crop, passed
    through ``activation`` when given (CAT-Seg's sigmoid at crop size), maps are summed where
    windows overlap and divided by the overlap count, and the result is resized (bilinear) to
    ``output_size`` when given. Serves logits, probabilities and auxiliary maps (saliency)
    alike.

    Args:
        maps: ``[num_windows * B, K, h, w]`` window-major (window ``k // B`` of image ``k % B``),
            at any feature resolution.
        windows: crop boxes ``(y1, y2, x1, x2)`` in the resized image (all of one size).
        batch_size: ``B``.
        resized_size: ``(Hr, Wr)``, the image the windows were cut from.
        output_size: ``(H, W)`` of the result (``None``: ``(Hr, Wr)``).
        chunk: window maps upsampled per call.

    Returns:
        ``[B, K, H, W]``.
    """
    b = batch_size
    if maps.shape[0] != len(windows) * b:
        raise ValueError(
            f"Expected {len(windows)} windows x {b} images = {len(windows) * b} window maps, "
            f"got {maps.shape[0]}."
        )
    hr, wr = resized_size
    acc = maps.new_zeros(b, maps.shape[1], hr, wr)
    count = maps.new_zeros(1, 1, hr, wr)
    y1, y2, x1, x2 = windows[0]
    crop_size = (y2 - y1, x2 - x1)
    step = max(1, chunk)
    for start in range(0, maps.shape[0], step):
        up = F.interpolate(
            maps[start : start + step], size=crop_size, mode="bilinear", align_corners=False
        )
        if activation is not None:
            up = activation(up)
        for j in range(up.shape[0]):
            win, bi = divmod(start + j, b)
            y1, y2, x1, x2 = windows[win]
            acc[bi, :, y1:y2, x1:x2] += up[j]
            if bi == 0:
                count[0, 0, y1:y2, x1:x2] += 1
    out = acc.div_(count)
    if output_size is None or tuple(output_size) == (hr, wr):
        return out
    return F.interpolate(out, size=tuple(output_size), mode="bilinear", align_corners=False)


def splice_size(height: int, width: int, patch_size: int, window: int | None) -> tuple[int, int]:
    """Trident's size for splicing (``preprocess_image`` in its ``seg_utils/utils.py``): a size
    already a multiple of ``patch_size`` is kept; otherwise the image is scaled so that its long
    side is the next multiple, each side is rounded up to a multiple (``int`` of the scaled
    side first), and neither side is below ``window``."""
    p = patch_size
    if height % p == 0 and width % p == 0:
        return height, width
    long = max(height, width)
    dst = -(-long // p) * p
    nh, nw = int(height * dst / long), int(width * dst / long)
    nh, nw = -(-nh // p) * p, -(-nw // p) * p
    least = window or 0
    return max(nh, least), max(nw, least)


def splice_ratio(out_grid: tuple[int, int], clip_grid: tuple[int, int]) -> int:
    """Cells of the spliced map per CLIP patch (Trident's ``ratio``): ``out_w // clip_w`` when
    the strategy's output grid (e.g. ProxyCLIP's VFM grid) is a whole multiple of the CLIP grid
    in width, else ``round(out_h / clip_h)`` (at least 1; the window maps are then resized)."""
    if out_grid[1] % clip_grid[1] == 0:
        return max(1, out_grid[1] // clip_grid[1])
    return max(1, int(round(out_grid[0] / clip_grid[0])))


def pad_to_multiple(
    images: Tensor, multiple: int, mean: Sequence[float], std: Sequence[float]
) -> Tensor:
    """``images`` (normalised with ``mean`` / ``std``) padded at the bottom / right to a
    multiple of ``multiple`` with the normalised value of a black pixel (``-mean / std``), as
    CLIP-DINOiser's official code does (``make_input_divisible``); unchanged when already a
    multiple."""
    h, w = images.shape[-2:]
    ph, pw = (multiple - h % multiple) % multiple, (multiple - w % multiple) % multiple
    if not (ph or pw):
        return images
    m = torch.tensor(mean, dtype=images.dtype, device=images.device)
    s = torch.tensor(std, dtype=images.dtype, device=images.device)
    out = (-m / s).view(1, 3, 1, 1).expand(images.shape[0], 3, h + ph, w + pw).clone()
    out[:, :, :h, :w] = images
    return out


def check_unit_images(images: Tensor) -> Tensor:
    """``[B, 3, H, W]`` RGB in ``[0, 1]``: floats are checked, ``uint8`` is divided by 255.

    Raises:
        ValueError: a wrong shape, or float values outside ``[0, 1]`` — images in ``0..255``
            given as floats (divide by 255) or already normalised with a mean and std (give
            the raw image; the backbone normalises).
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a [B, 3, H, W] RGB tensor, got {shape}.")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise ValueError(f"images must be float RGB in [0, 1] or uint8, got dtype {images.dtype}.")
    lo, hi = float(images.amin()), float(images.amax())
    tol = 1e-3  # resampling overshoot
    if hi > 1 + tol or lo < -tol:
        hint = (
            "they look like 0..255 pixel values: divide by 255"
            if hi > 2 and lo >= -tol
            else "they look normalised with a mean and std: pass the raw image"
        )
        raise ValueError(
            f"images must be RGB in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; {hint} "
            "(Predictor.set_image also takes uint8 arrays and files)."
        )
    return images


def apply_background_rule(
    labels: Tensor,
    probs: Tensor,
    saliency: Tensor,
    delta: float,
    background_index: int = 0,
) -> Tensor:
    """CLIP-DINOiser's rule: pixels with ``max_c probs < delta`` *and* ``saliency < 0.5``
    become ``background_index``.

    Args:
        labels: ``[B, H, W]`` int64 labels (not modified).
        probs: ``[B, C, H, W]`` class probabilities.
        saliency: ``[B, 1, H, W]`` or ``[B, H, W]`` background-head sigmoid.
        delta: confidence bound (0.99 in the paper).
        background_index: the label given to those pixels.

    Returns:
        ``[B, H, W]`` new labels.
    """
    sal = saliency[:, 0] if saliency.ndim == 4 else saliency
    if sal.shape != labels.shape or probs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Shapes do not match: labels {tuple(labels.shape)}, probs {tuple(probs.shape)}, "
            f"saliency {tuple(saliency.shape)}."
        )
    mask = (probs.max(dim=1).values < delta) & (sal < 0.5)
    return torch.where(mask, torch.full_like(labels, background_index), labels)


class SaliencyRule:
    """CLIP-DINOiser's background rule (docs/methods.md#clip-dinoiser), the ``saliency_rule`` of a
    segmentor: where the top class probability is below ``delta`` and the saliency map says "not
    salient", the pixel is background.

    Args:
        delta: confidence bound (0.99 in the paper), in ``(0, 1]``.
        aux_key: the refiner's auxiliary map holding the saliency (``[B, 1, h, w]`` in
            ``[0, 1]``).
    """

    def __init__(self, delta: float = 0.99, aux_key: str = "background") -> None:
        delta = check_real("delta", delta)
        if not 0 < delta <= 1:
            raise ValueError(f"delta must be in (0, 1], got {delta}.")
        self.delta = float(delta)
        self.aux_key = str(aux_key)

    def on_probs(self, probs: Tensor, saliency: Tensor, background: int) -> Tensor:
        """The official form at feature resolution: class ``background``'s probability set to
        1.0 where ``max < delta`` and the saliency is not ``> 0.5`` (the others are kept).

        Args:
            probs: ``[B, C, h, w]`` class probabilities (changed in place and returned).
            saliency: ``[B, 1, h, w]``.
        """
        sal = saliency[:, 0].to(probs)
        mask = (probs.max(dim=1).values < self.delta) & ~(sal > 0.5)
        probs[:, background] = torch.where(
            mask, torch.ones_like(probs[:, background]), probs[:, background]
        )
        return probs

    def on_labels(self, labels: Tensor, probs: Tensor, saliency: Tensor, background: int) -> Tensor:
        """The rule on final maps: see :func:`apply_background_rule`."""
        return apply_background_rule(labels, probs, saliency, self.delta, background)

    def __repr__(self) -> str:
        return f"SaliencyRule(delta={self.delta}, aux_key={self.aux_key!r})"


@dataclass
class ImageFeatures:
    """Image-side results cached by :class:`~ovdense.Predictor` (vocabulary-independent).

    Attributes:
        dense: ``[num_windows * B, D, gh, gw]`` window-major dense features (after the refiner),
            L2-normalised, or unnormalised for a head that asks for that
            (:attr:`Segmentor.head_raw_features`, CAT-Seg); with a global view (see
            :class:`Segmentor`), ``B`` more entries at the end.
        windows: crop boxes ``(y1, y2, x1, x2)`` in the resized image.
        batch_size: ``B``.
        resized_size: ``(Hr, Wr)`` after the short-side resize.
        image_size: ``(H, W)`` of the input.
        images: ``[B, 3, H, W]`` input in ``[0, 1]`` (kept for PAMR and the
            ``post_refiner``), or ``None``.
        aux: the refiner's auxiliary maps, ``{name: [num_windows * B, K, h, w]}`` window-major
            like ``dense`` (e.g. CLIP-DINOiser's saliency ``"background"``).
        intermediates: the backbone's block outputs the head asked for
            (``head.intermediate_layers``), ``{"block{i}": [num_windows * B, W, gh, gw]}``
            window-major; empty for heads that need none.
        regions: ``[B, H, W]`` int32 region maps of the inputs from the segmentor's
            ``mask_source`` (for the ``label_refiner``), or ``None``.
        global_view: whether ``dense`` (and ``aux``, ``intermediates``) end with one
            whole-image view per image (:class:`Segmentor`'s ``global_view``).
    """

    dense: Tensor
    windows: list[tuple[int, int, int, int]]
    batch_size: int
    resized_size: tuple[int, int]
    image_size: tuple[int, int]
    images: Tensor | None = None
    aux: dict[str, Tensor] = field(default_factory=dict)
    intermediates: dict[str, Tensor] = field(default_factory=dict)
    regions: Tensor | None = None
    global_view: bool = False

    @property
    def num_window_maps(self) -> int:
        """``len(windows) * batch_size``: the window entries of ``dense`` (the global views,
        when present, follow them)."""
        return len(self.windows) * self.batch_size

    @property
    def background(self) -> Tensor | None:
        """``aux["background"]`` (a saliency map), or ``None``."""
        return self.aux.get("background")


@dataclass
class SegmentationOutput:
    """Attributes:
    labels: ``[B, H, W]`` int64 class index per pixel.
    probs: ``[B, C, H, W]`` class probabilities (max over each class's names), or ``None``
        when not requested (``decode(..., return_probs=False)``).
    vocabulary: the classes, ``vocabulary.display_names[labels]`` names each pixel.
    """

    labels: Tensor
    probs: Tensor | None
    vocabulary: Vocabulary


class LabelRules:
    """The labels of class scores: the argmax with SCLIP's area rule and the background
    threshold, shared by :class:`Segmentor` and segmentors built otherwise
    (:class:`ovdense.sam.sam3.SAM3Segmentor`).

    A class using it sets ``prob_thd`` (float in ``[0, 1]``, ``0`` off), ``area_thd`` (float or
    ``None``) and ``background_index`` (int or ``None``); their meaning is given in
    :class:`Segmentor`'s arguments.
    """

    prob_thd: float
    area_thd: float | None
    background_index: int | None

    def _prob_thd(self, prob_thd: float | None) -> float:
        if prob_thd is None:
            return self.prob_thd
        return float(check_fraction("prob_thd", prob_thd))

    def resolve_background(self, vocabulary: Vocabulary, needed_by: str = "prob_thd") -> int:
        """The background class of ``vocabulary`` for the thresholds (see ``background_index``).

        Raises:
            ValueError: no class is named like background (and none was given), or the given
                index is not a class of this vocabulary.
        """
        n = vocabulary.num_classes
        if self.background_index is not None:
            if not 0 <= self.background_index < n:
                raise ValueError(
                    f"background_index {self.background_index} is not a class of this "
                    f"{n}-class vocabulary; {needed_by} needs a background class (put it "
                    "first, e.g. 'background,cat,dog')."
                )
            return self.background_index
        found = vocabulary.background_index
        if found is None:
            raise ValueError(
                f"{needed_by} sends uncertain pixels to a background class, but no class of "
                f"this vocabulary is named background ({vocabulary.display_names[:3]}...); add "
                "one (e.g. 'background', first), set background_index, or leave "
                f"{needed_by} off."
            )
        return found

    def assign_labels(
        self, probs: Tensor, prob_thd: float | None = None, vocabulary: Vocabulary | None = None
    ) -> Tensor:
        """Argmax with SCLIP's area rule and the background threshold.

        Args:
            probs: ``[B, C, H, W]`` class probabilities.
            prob_thd: overrides the segmentor's threshold for this call.
            vocabulary: the classes of ``probs``; needed to find the background class by name
                when ``background_index`` is ``None`` and a threshold is on.
        """
        thd = self._prob_thd(prob_thd)
        c = probs.shape[1]
        bg = 0
        if thd > 0 or self.area_thd is not None:
            if vocabulary is None and self.background_index is None:
                raise ValueError(
                    "assign_labels needs the vocabulary (or an explicit background_index) to "
                    "find the background class for the thresholds."
                )
            vocab = vocabulary if vocabulary is not None else Vocabulary([str(i) for i in range(c)])
            bg = self.resolve_background(vocab, "prob_thd" if thd > 0 else "area_thd")
        if self.area_thd is not None:
            pred = probs.argmax(dim=1)
            onehot = F.one_hot(pred, c).to(probs.dtype)  # [B, H, W, C]
            area = onehot.sum(dim=(1, 2))  # [B, C]
            area_fg = area.clone()
            area_fg[:, bg] = 0
            keep = (area_fg > self.area_thd * area_fg.sum(dim=1, keepdim=True)).to(probs.dtype)
            keep[:, bg] = 1
            probs = probs * keep[:, :, None, None]
        top, labels = probs.max(dim=1)
        if thd > 0:
            labels[top < thd] = bg
        return labels


class Segmentor(LabelRules, nn.Module):
    """Open-vocabulary semantic segmentation from parts (see the module docstring).

    Pipeline: short-side resize (long side capped) -> sliding windows (batched; padded to whole
    patches in the ``"paper"`` order) -> ``backbone`` -> ``refiner`` (dense features and
    auxiliary maps per window) -> ``head`` scores per name -> decoding in ``decode_order``:

    * ``"ovdense"`` (the SCLIP-family order): window scores upsampled and averaged
      (:func:`stitch_windows`), resized to the input size, optional PAMR, ``logit_scale`` x,
      softmax over names, max over synonyms, area / probability thresholds, argmax, and the
      ``saliency_rule`` at the input size on the stitched saliency.
    * ``"paper"`` (CLIP-DINOiser's official order, docs/clip_dinoiser_protocol.md): per window
      at feature resolution ``softmax(logit_scale * scores)``, max over synonyms, the
      ``saliency_rule`` (background probability set to 1.0); window *probabilities* stitched
      and resized to the input size, optional PAMR, thresholds, argmax. Crops that are not a
      multiple of the patch size are padded with black pixels (:func:`pad_to_multiple`).
    * ``"sigmoid"`` (CAT-Seg's official order, docs/methods.md#cat-seg): per window the head's
      scores upsampled to the crop, ``sigmoid(logit_scale * scores)``, averaged where windows
      overlap (and 1:1 with the global view's, see ``global_view``), resized to the input
      size, max over synonyms, thresholds, argmax. The probabilities are per class (they need
      not sum to 1).

    In every order the optional ``post_refiner`` acts on the input-size class probabilities
    (after the max over synonyms and PAMR, before the thresholds, the argmax and, in the
    ``"ovdense"`` order, the ``saliency_rule`` on labels).

    Args:
        backbone: a dense backbone (``normalize``, ``patch_size``; ``forward(images) ->
            DenseFeatures``).
        text_encoder: the :class:`TextEncoder` (same joint space as the backbone).
        head: a registered head name (:data:`~ovdense.modeling.heads.SEG_HEADS`) or a module:
            ``head(dense [n, D, h, w], embeds [N, D]) -> [n, N, h, w]``.
        refiner: optional ``refiner(features, images) -> (features, aux maps)`` (see
            :data:`~ovdense.modeling.refiners.REFINERS`).
        saliency_rule: optional :class:`SaliencyRule` using the refiner's saliency map.
        background_rule: when the ``saliency_rule`` applies: ``None`` when the background class
            (``background_index``, else the vocabulary's first class named e.g.
            ``"background"``, see :data:`BACKGROUND_NAMES`) exists, ``True`` always (error
            without one), ``False`` never, ``"force"`` always, class ``background_index`` (0 if
            unset) being the background whatever its names (a benchmark's class 0 given by
            other names, e.g. VOC21 under the unified class-name rule).
        decode_order: ``"ovdense"`` or ``"paper"`` (above).
        short_side: resize the short side to this (``None``: keep the input size).
        max_long_side: cap of the long side in that resize.
        fixed_size: resize every image to exactly this ``(H, W)`` (or ``S x S``), aspect ratio
            not kept, instead of ``short_side`` (CAT-Seg's official 640 x 640).
        window, stride: sliding-window crop and stride in pixels (``window=None``: whole image).
        global_view: also run the whole input image resized to the window size (one more
            "window" per image) and average its map 1:1 with the stitched windows' map at the
            resized size (CAT-Seg's official evaluation). Needs ``window``.
        crop_resize: resize each crop (and the global view) to ``crop_resize x crop_resize``
            before the backbone (CAT-Seg ViT-L/14: its 384-pixel windows enter CLIP at 336);
            maps are upsampled back to the crop as usual.
        window_batch_size: windows per backbone call.
        logit_scale: multiplier of the head's scores before the softmax.
        prob_thd: pixels whose top class probability is below this (in ``[0, 1]``) become the
            background class; ``0`` is off.
        area_thd: SCLIP's rule: non-background classes covering at most this fraction (in
            ``[0, 1]``) of the non-background area are suppressed (``None``: off).
        background_index: the class the thresholds assign. ``None`` (default): the first class
            of the vocabulary named like background (``"background"``, ``"bg"``, ``"backdrop"``;
            :attr:`Vocabulary.background_index`); a threshold with no such class is an error,
            never a silent class 0. An ``int`` names it explicitly (a benchmark's class 0,
            whatever its names).
        pamr: an optional label refiner applied to the input-size scores (``"ovdense"``) or
            probabilities (``"paper"``), e.g. :class:`~ovdense.modeling.refiners.PAMR`.
        precision: ``"fp32"``, ``"fp16"`` / ``"bf16"`` (autocast; fp16 needs CUDA), ``"int8"``
            (CPU only, inference only: the backbone's ``nn.Linear`` layers dynamically
            quantized, :func:`~ovdense.modeling.quantization.quantize_int8`, on a copy made at
            the first image and remade when the backbone's weights change; the text side, the
            refiner and the head stay float32) or ``"auto"`` (fp16 on CUDA, fp32 on CPU).
        post_refiner: an optional module ``post_refiner(images, probs) -> probs`` refining the
            input-size class probabilities (``images [B, 3, H, W]`` RGB in ``[0, 1]``, ``probs
            [B, C, H, W]``; it returns the same shape), e.g.
            :class:`~ovdense.sam.refine.SAMRefiner`; any module with that contract fits
            (a config sets ``model.post_refiner = L(SAMRefiner)(...)``).
        mask_source: optional class-agnostic masks of each input image (``[H, W, 3]`` uint8 RGB
            -> ``[N, H, W]`` bool; the ``[0, 1]`` inputs are taken back to uint8 by
            ``round(255 x)``), painted into a region map (larger masks over smaller ones,
            :func:`~ovdense.utils.regions.masks_to_region_map`); a strategy with
            ``needs_regions`` gets it resized (nearest) and cut like the windows
            (``extras[REGIONS]``).
        label_refiner: optional ``label_refiner(labels [B, H, W], regions [B, H, W]) -> labels``
            applied to the final labels (needs ``mask_source``), e.g.
            :class:`~ovdense.modeling.refiners.RegionVote`.
        aggregator: an optional splice aggregator (see
            :data:`~ovdense.modeling.refiners.AGGREGATORS`), which turns on the splice-then-segment
            mode (:meth:`encode_spliced`). It needs a tower backbone (``forward_tokens``,
            ``project``), windows and stride that are multiples of the patch size, and no
            ``refiner`` nor a head that reads intermediate blocks.
    """

    def __init__(
        self,
        backbone: DenseBackbone,
        text_encoder: TextEncoder,
        head: str | nn.Module = "cosine",
        refiner: nn.Module | None = None,
        saliency_rule: SaliencyRule | None = None,
        *,
        background_rule: bool | str | None = None,
        decode_order: DecodeOrder = "ovdense",
        short_side: int | None = 336,
        max_long_side: int | None = 2048,
        fixed_size: int | Sequence[int] | None = None,
        window: int | None = 224,
        stride: int | None = 112,
        global_view: bool = False,
        crop_resize: int | None = None,
        window_batch_size: int = 8,
        logit_scale: float = 40.0,
        prob_thd: float = 0.0,
        area_thd: float | None = None,
        background_index: int | None = None,
        pamr: nn.Module | None = None,
        precision: str = "fp32",
        post_refiner: nn.Module | None = None,
        mask_source: Callable[[np.ndarray], Tensor] | None = None,
        label_refiner: nn.Module | None = None,
        aggregator: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}.")
        short_side = check_int("short_side", short_side, allow_none=True)
        max_long_side = check_int("max_long_side", max_long_side, allow_none=True)
        window = check_int("window", window, allow_none=True)
        stride = check_int("stride", stride, allow_none=True)
        window_batch_size = check_int("window_batch_size", window_batch_size)
        logit_scale = check_real("logit_scale", logit_scale, low=0.0, low_open=True)
        prob_thd = check_fraction("prob_thd", prob_thd)
        area_thd = check_fraction("area_thd", area_thd, allow_none=True)
        background_index = check_int(
            "background_index", background_index, minimum=0, allow_none=True
        )
        if window is not None and stride is not None and stride > window:
            raise ValueError(f"stride ({stride}) > window ({window}) would leave gaps.")
        if mask_source is not None and not callable(mask_source):
            raise TypeError(f"mask_source must be callable, got {type(mask_source).__name__}.")
        crop_resize = check_int("crop_resize", crop_resize, allow_none=True)
        if global_view and window is None:
            raise ValueError(
                "global_view adds the whole image at the window size: set window (e.g. 384)."
            )
        if fixed_size is not None:
            pair = (fixed_size, fixed_size) if isinstance(fixed_size, int) else tuple(fixed_size)
            if len(pair) != 2:
                raise ValueError(f"fixed_size takes S or (H, W), got {fixed_size!r}.")
            fixed_size = (
                int(check_int("fixed_size", pair[0], minimum=1)),
                int(check_int("fixed_size", pair[1], minimum=1)),
            )
        if saliency_rule is not None and not isinstance(saliency_rule, SaliencyRule):
            raise TypeError(
                f"saliency_rule must be a SaliencyRule or None, got {type(saliency_rule).__name__}."
            )
        self.backbone = backbone
        self.text_encoder = text_encoder
        self.head = build_seg_head(head)
        self._request_head_inputs()
        self.refiner = refiner
        self.saliency_rule = saliency_rule
        self.background_rule = background_rule
        self.decode_order = decode_order
        self.pamr = pamr
        self.post_refiner = post_refiner
        self.mask_source = mask_source
        self.label_refiner = label_refiner
        self.aggregator = aggregator
        self.short_side = short_side
        self.max_long_side = max_long_side
        self.fixed_size: tuple[int, int] | None = fixed_size
        self.window = window
        self.stride = stride
        self.global_view = bool(global_view)
        self.crop_resize = crop_resize
        self.window_batch_size = window_batch_size
        self.logit_scale = float(logit_scale)
        self.prob_thd = float(prob_thd)
        self.area_thd = area_thd
        self.background_index = background_index
        self.precision = precision
        #: (weights key, int8 backbone, backend) of ``precision="int8"``: :meth:`image_backbone`
        self._int8_cache: tuple[tuple[tuple[int, int], ...], nn.Module, str] | None = None
        if aggregator is not None:
            self._check_splice()
        self.eval()

    # -- what the head needs -------------------------------------------------------------
    @property
    def head_layers(self) -> tuple[int, ...]:
        """Block indices whose outputs the head takes (``head.intermediate_layers``, ``()``
        for most heads)."""
        return tuple(int(i) for i in getattr(self.head, "intermediate_layers", ()) or ())

    @property
    def head_per_template(self) -> bool:
        """Whether the head takes one embedding per prompt template (``head.per_template``)."""
        return bool(getattr(self.head, "per_template", False))

    @property
    def head_raw_features(self) -> bool:
        """Whether the head takes the unnormalised projected features
        (``head.raw_features``, CAT-Seg): :class:`ImageFeatures.dense` then holds those."""
        return bool(getattr(self.head, "raw_features", False))

    def _request_head_inputs(self) -> None:
        """Add the head's ``intermediate_layers`` to the backbone's ``out_indices``.

        Raises:
            ValueError: the head needs block outputs and the backbone cannot give them.
        """
        layers = self.head_layers
        if not layers:
            return
        have = getattr(self.backbone, "out_indices", None)
        num_blocks = getattr(self.backbone, "num_blocks", None)
        if have is None or num_blocks is None:
            raise ValueError(
                f"The head {type(self.head).__name__} needs the outputs of blocks {layers}, but "
                f"the backbone {type(self.backbone).__name__} has no out_indices."
            )
        if max(layers) >= num_blocks or min(layers) < 0:
            raise ValueError(
                f"The head {type(self.head).__name__} needs the outputs of blocks {layers}, but "
                f"the backbone has {num_blocks} blocks (0..{num_blocks - 1})."
            )
        backbone: Any = self.backbone  # a tower backbone (checked above), read by attribute
        backbone.out_indices = tuple(sorted(set(have) | set(layers)))

    def _head_embeds(self, text: ClassEmbeddings, device: torch.device) -> Tensor:
        if not self.head_per_template:
            return text.embeds.to(device)
        if text.template_embeds is None:
            raise ValueError(
                f"The head {type(self.head).__name__} takes per-template embeddings; encode the "
                "vocabulary with segmentor.encode_text (or text_encoder(vocab, per_template=True))."
            )
        return text.template_embeds.to(device)

    def _window_intermediates(self, feats: ImageFeatures, start: int, stop: int) -> list[Tensor]:
        keys = [f"block{i}" for i in self.head_layers]
        missing = [k for k in keys if k not in feats.intermediates]
        if missing:
            raise ValueError(
                f"The head {type(self.head).__name__} needs intermediates {keys}; these image "
                f"features carry {sorted(feats.intermediates)} (encode the image with this "
                "segmentor)."
            )
        return [feats.intermediates[k][start:stop] for k in keys]

    # -- options --------------------------------------------------------------------------
    @property
    def decode_order(self) -> DecodeOrder:
        """``"ovdense"`` or ``"paper"`` (see the class docstring); settable. ``"paper"`` also
        pads crops to whole patches (:attr:`pad_to_patch`) from the next :meth:`encode_image`."""
        return self._decode_order

    @decode_order.setter
    def decode_order(self, value: DecodeOrder) -> None:
        if value not in DECODE_ORDERS:
            raise ValueError(f"decode_order must be one of {DECODE_ORDERS}, got {value!r}.")
        self._decode_order = value

    @property
    def pad_to_patch(self) -> bool:
        """Whether :meth:`encode_image` pads crops to a multiple of the patch size (the
        ``"paper"`` order) instead of letting the patch embedding drop the remainder."""
        return self._decode_order == "paper"

    @property
    def background_rule(self) -> bool | str | None:
        """When the ``saliency_rule`` applies (see the class docstring); settable."""
        return self._background_rule

    @background_rule.setter
    def background_rule(self, value: bool | str | None) -> None:
        if value not in BACKGROUND_RULES:
            raise ValueError(
                f"background_rule must be None, True, False or 'force', got {value!r}."
            )
        self._background_rule = value

    def _check_splice(self) -> None:
        """Raise a ``ValueError`` naming what does not fit the splice-then-segment mode."""
        bb = self.backbone
        if not (hasattr(bb, "forward_tokens") and hasattr(bb, "project")):
            raise ValueError(
                f"The aggregator needs a CLIP tower backbone (forward_tokens, project); "
                f"{type(bb).__name__} has neither."
            )
        if self.refiner is not None:
            raise ValueError(
                "A segmentor takes a refiner (per window) or an aggregator (spliced windows), "
                "not both: set model.refiner=None or model.aggregator=None."
            )
        if self.head_layers:
            raise ValueError(
                f"The head {type(self.head).__name__} reads intermediate blocks per window, "
                "which the splice-then-segment mode (aggregator) does not keep."
            )
        if self._strategy_needs_regions():
            raise ValueError(
                "The strategy reads region maps per window, which the splice-then-segment mode "
                "(aggregator) does not cut: use one or the other."
            )
        if self.global_view or self.crop_resize is not None:
            raise ValueError(
                "global_view and crop_resize (CAT-Seg's sliding inference) change the windows "
                "the splice-then-segment mode (aggregator) splices: set global_view=False and "
                "crop_resize=None."
            )
        p = bb.patch_size
        for name, value in (("window", self.window), ("stride", self.stride)):
            if value is not None and value % p:
                raise ValueError(
                    f"With an aggregator the windows are spliced on the patch grid: {name} "
                    f"({value}) must be a multiple of the patch size {p}."
                )

    @property
    def _keeps_images(self) -> bool:
        """Whether decoding needs the input images (PAMR, ``post_refiner``)."""
        return self.pamr is not None or self.post_refiner is not None

    def _refine_probs(self, feats: ImageFeatures, probs: Tensor) -> Tensor:
        """PAMR (if set) on class probabilities ``[B, K, H, W]``, then the ``post_refiner``:
        for the decoding orders that end in probabilities rather than logits."""
        if self.pamr is not None:
            assert feats.images is not None
            probs = self.pamr(self.backbone.normalize(feats.images), probs)
        return self._post_refine(feats, probs)

    def _post_refine(self, feats: ImageFeatures, probs: Tensor) -> Tensor:
        """``post_refiner(images, probs)`` (checked), or ``probs`` without one."""
        if self.post_refiner is None:
            return probs
        if feats.images is None:
            raise ValueError(
                "post_refiner needs the input images, which these features do not carry "
                "(encoded before it was set): encode the image again."
            )
        out = self.post_refiner(feats.images.to(probs.device), probs)
        if not isinstance(out, Tensor) or out.shape != probs.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"post_refiner {type(self.post_refiner).__name__} returned {got}; it maps "
                f"(images, probs {tuple(probs.shape)}) to probabilities of the same shape."
            )
        return out

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def _autocast(self):
        dev = self.device.type
        prec = self.precision
        if prec == "auto":
            prec = "fp16" if dev == "cuda" else "fp32"
        if prec == "int8":
            self._check_int8()
            return nullcontext()
        if prec == "fp32":
            return nullcontext()
        if prec == "fp16" and dev != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU.")
        dtype = torch.float16 if prec == "fp16" else torch.bfloat16
        return torch.autocast(device_type=dev, dtype=dtype)

    def _check_int8(self) -> None:
        if self.device.type != "cpu":
            raise ValueError(
                f"precision='int8' (dynamic int8 quantization) runs on the CPU only; this "
                f"segmentor is on {self.device.type}. Use precision='fp16' or 'bf16' on a GPU, "
                "or move the segmentor to the CPU."
            )
        if self.training and torch.is_grad_enabled():
            raise RuntimeError(
                "precision='int8' is for inference: call segmentor.eval() (or run under "
                "torch.no_grad()), or train with precision 'fp32' / 'bf16'."
            )

    def image_backbone(self) -> nn.Module:
        """The backbone the image side runs: :attr:`backbone` itself, or for
        ``precision="int8"`` its int8 copy (made at the first call, remade when a backbone
        parameter or buffer is replaced or changed in place, e.g. by ``load_state_dict``)."""
        if self.precision != "int8":
            return self.backbone
        from ..quantization import quantize_int8

        self._check_int8()
        tensors = [*self.backbone.parameters(), *self.backbone.buffers()]
        key = tuple((id(t), t._version) for t in tensors)
        cache = self._int8_cache
        if cache is None or cache[0] != key:
            quantized, backend = quantize_int8(self.backbone)
            # NOTE: kept out of the registered modules, so state_dict() and load_state_dict()
            # stay those of the float backbone.
            cache = (key, quantized, backend)
            self._int8_cache = cache
        return cache[1]

    # -- image side -----------------------------------------------------------------------
    def pad_images(self, images: Tensor) -> Tensor:
        """Normalised ``images`` padded to whole patches with black pixels
        (:func:`pad_to_multiple` with the backbone's patch size, mean and std)."""
        bb = self.backbone
        return pad_to_multiple(images, bb.patch_size, bb.mean, bb.std)

    def _strategy_needs_text(self) -> bool:
        """Whether the backbone's last-block strategy needs the vocabulary (ResCLIP's SFR)."""
        return bool(getattr(getattr(self.backbone, "strategy", None), "needs_text", False))

    def _text_extras(self, text: ClassEmbeddings | None) -> dict[str, Any] | None:
        """The backbone extras carrying the name embeddings for a strategy that needs them."""
        if not self._strategy_needs_text():
            return None
        if text is None:
            name = getattr(getattr(self.backbone, "strategy", None), "name", "?")
            raise ValueError(
                f"The strategy {name!r} needs the vocabulary to compute "
                "image features (ResCLIP's semantic feedback): call encode_image(images, "
                "text=segmentor.encode_text(vocabulary)), or use forward / segment_batch."
            )
        return {TEXT_EMBEDS: text.embeds.to(self.device)}

    def _strategy_needs_regions(self) -> bool:
        """Whether the backbone's strategy reads region maps (CorrCLIP)."""
        return bool(getattr(getattr(self.backbone, "strategy", None), "needs_regions", False))

    @torch.no_grad()
    def image_regions(self, images: Tensor, regions: Tensor | None = None) -> Tensor | None:
        """Region maps ``[B, H, W]`` int of ``[B, 3, H, W]`` images in ``[0, 1]``: ``regions``
        when given (checked), else the ``mask_source``'s (int32), else ``None``.

        Raises:
            ValueError: ``regions`` not ``[B, H, W]`` integers of the images' size; or a
                ``label_refiner`` with neither ``regions`` nor a ``mask_source``.
        """
        if regions is not None:
            regions = torch.as_tensor(regions)
            b, _, h, w = images.shape
            if tuple(regions.shape) != (b, h, w) or regions.is_floating_point():
                raise ValueError(
                    f"regions must be [B={b}, H={h}, W={w}] integer region maps of the images "
                    f"(0 or the smallest value: no region), got {regions.dtype} "
                    f"{tuple(regions.shape)}."
                )
            return regions.to(images.device)
        if self.mask_source is None:
            if self.label_refiner is not None:
                raise ValueError(
                    f"label_refiner {type(self.label_refiner).__name__} refines labels by the "
                    "images' regions: set mask_source (e.g. SamMaskSource(checkpoint=...)) or "
                    "pass the region maps (encode_image(images, regions=...))."
                )
            return None
        pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        maps = [
            masks_to_region_map(self.mask_source(np.ascontiguousarray(p.permute(1, 2, 0).cpu())))
            for p in pixels
        ]
        return torch.stack(maps).to(images.device)

    def _crop_regions(
        self,
        regions: Tensor | None,
        resized: tuple[int, int],
        windows: list[tuple[int, int, int, int]],
    ) -> Tensor | None:
        """``regions`` resized (nearest) to the resized image and cut like the windows:
        ``[num_windows * B, h, w]`` window-major (then the whole map at the crop size per
        image, with ``global_view``), when the strategy reads them."""
        if regions is None or not self._strategy_needs_regions():
            return None
        r = regions
        if tuple(r.shape[-2:]) != tuple(resized):
            r = F.interpolate(r[:, None].float(), size=resized, mode="nearest")[:, 0].int()
        parts = [r[:, y1:y2, x1:x2] for (y1, y2, x1, x2) in windows]
        if self.global_view:
            size = tuple(parts[0].shape[-2:])
            whole = F.interpolate(regions[:, None].float(), size=size, mode="nearest")
            parts.append(whole[:, 0].int())
        return torch.cat(parts, dim=0)

    def forward_features(
        self, images: Tensor, extras: dict[str, Any] | None = None
    ) -> tuple[DenseFeatures, dict[str, Tensor]]:
        """The image side of one batch of crops: ``backbone``, then ``refiner`` if any.

        Args:
            images: ``[B, 3, H, W]`` normalised with the backbone's mean / std (no resize, no
                windows, no padding: :meth:`encode_image` does those).

        Returns:
            ``(features, aux)``: the (refined) :class:`DenseFeatures` and the refiner's
            auxiliary maps (``{}`` without a refiner). Use this, not ``backbone`` alone, for
            the dense features a segmentor classifies (e.g. region classification).
            ``extras`` go to the backbone's strategy (``TokenContext.extras``) when given.
        """
        bb = self.image_backbone()
        out = bb(images) if extras is None else bb(images, extras)
        if self.refiner is None:
            return out, {}
        return self.refiner(out, images)

    def _resize_and_window(
        self, images: Tensor
    ) -> tuple[Tensor, Tensor, list[tuple[int, int, int, int]], tuple[int, int]]:
        """Checked ``[B, 3, H, W]`` images in ``[0, 1]`` on the device, their window crops
        ``[num_windows * B, 3, h, w]`` (window-major, normalised, not padded), the crop boxes and
        the resized size."""
        images = check_unit_images(images).to(self.device, torch.float32)
        _, _, h, w = images.shape
        if self.fixed_size is not None:
            hr, wr = self.fixed_size
        else:
            hr, wr = rescale_size(h, w, self.short_side, self.max_long_side)
        p = self.backbone.patch_size
        if min(hr, wr) < p:
            raise ValueError(
                f"Image of {h}x{w} pixels is smaller than one {p}x{p} patch after resizing to "
                f"{hr}x{wr}; set short_side (e.g. 336) or give a larger image."
            )
        x = (
            images
            if (hr, wr) == (h, w)
            else F.interpolate(images, size=(hr, wr), mode="bilinear", align_corners=False)
        )
        x = self.backbone.normalize(x)
        if self.aggregator is not None:  # Trident: whole patches, at least one window
            sh, sw = splice_size(hr, wr, p, self.window)
            if (sh, sw) != (hr, wr):
                x = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False)
                hr, wr = sh, sw
        windows = sliding_windows(hr, wr, self.window, self.stride)
        parts = [x[:, :, y1:y2, x1:x2] for (y1, y2, x1, x2) in windows]
        if self.global_view:
            # the input image (not the resized one) at the crop size, as CAT-Seg's code does
            size = (parts[0].shape[-2], parts[0].shape[-1])
            whole = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            parts.append(self.backbone.normalize(whole))
        return images, torch.cat(parts, dim=0), windows, (hr, wr)

    def _forward_crops(
        self,
        crops: Tensor,
        extras: dict[str, Any] | None = None,
        regions: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """Same-size normalised crops ``[n, 3, h, w]`` -> dense features ``[n, D, gh, gw]``,
        auxiliary maps ``{name: [n, K, gh, gw]}`` and the block outputs the head needs
        ``{"block{i}": [n, W, gh, gw]}`` (float32), ``window_batch_size`` crops per backbone
        call (padded to whole patches in the ``"paper"`` order); ``extras`` go to the
        backbone's strategy, with the crops' region maps ``regions`` ``[n, h, w]`` (if any)
        as ``extras[REGIONS]``."""
        feats: list[Tensor] = []
        aux: dict[str, list[Tensor]] = {}
        inter: dict[str, list[Tensor]] = {}
        keys = [f"block{i}" for i in self.head_layers]
        starts = range(0, crops.shape[0], self.window_batch_size)
        # a bar only where the wait is long (huge images, small window batches)
        bar = tqdm(starts, desc="Windows", unit="batch", leave=False, disable=len(starts) < 8)
        with self._autocast():
            for start in bar:
                batch = crops[start : start + self.window_batch_size]
                if self.crop_resize is not None:
                    batch = F.interpolate(
                        batch,
                        size=(self.crop_resize, self.crop_resize),
                        mode="bilinear",
                        align_corners=False,
                    )
                if self.pad_to_patch:
                    batch = self.pad_images(batch)
                call_extras = extras
                if regions is not None:
                    part = regions[start : start + self.window_batch_size]
                    call_extras = {**(extras or {}), REGIONS: part}
                out, maps = self.forward_features(batch, call_extras)
                for name, m in maps.items():
                    aux.setdefault(name, []).append(m.float())
                for key in keys:
                    if key not in out.intermediates:
                        raise ValueError(
                            f"The head {type(self.head).__name__} needs {key}, which the "
                            f"backbone did not return (it gave {sorted(out.intermediates)})."
                        )
                    inter.setdefault(key, []).append(out.intermediates[key].float())
                dense = out.unnormalized() if self.head_raw_features else out.dense
                feats.append(dense.float())
        return (
            torch.cat(feats, dim=0),
            {name: torch.cat(m, dim=0) for name, m in aux.items()},
            {name: torch.cat(m, dim=0) for name, m in inter.items()},
        )

    @torch.no_grad()
    def encode_image(
        self,
        images: Tensor,
        text: ClassEmbeddings | None = None,
        regions: Tensor | None = None,
    ) -> ImageFeatures:
        """Dense features (and the refiner's auxiliary maps) of every window of a batch of
        same-size images.

        Args:
            images: ``[B, 3, H, W]`` RGB in ``[0, 1]`` (float), or ``uint8`` in ``[0, 255]``
                (divided by 255). Float values outside ``[0, 1]`` are refused: see
                :func:`check_unit_images`.
            text: the vocabulary's embeddings, needed (and only used) when the strategy's
                features depend on the vocabulary (``strategy.needs_text``, ResCLIP).
            regions: ``[B, H, W]`` integer region maps of the images (e.g. masks generated
                beforehand; 0, or the smallest value, where no mask lies) used instead of the
                ``mask_source``'s, by a strategy that reads regions and by the
                ``label_refiner``.
        """
        extras = self._text_extras(text)
        if self.aggregator is not None:
            return self.encode_spliced(images, extras, regions)
        images, crops, windows, resized = self._resize_and_window(images)
        regions = self.image_regions(images, regions)
        crop_regions = self._crop_regions(regions, resized, windows)
        dense, aux, inter = self._forward_crops(crops, extras, crop_regions)
        return ImageFeatures(
            dense=dense,
            windows=windows,
            batch_size=images.shape[0],
            resized_size=resized,
            image_size=(images.shape[2], images.shape[3]),
            images=images if self._keeps_images else None,
            aux=aux,
            intermediates=inter,
            regions=regions,
            global_view=self.global_view,
        )

    @torch.no_grad()
    def encode_spliced(
        self,
        images: Tensor,
        extras: dict[str, Any] | None = None,
        regions: Tensor | None = None,
    ) -> ImageFeatures:
        """The splice-then-segment mode (Trident; the segmentor has an ``aggregator``).

        Per image: the short-side resize, rounded to whole patches (:func:`splice_size`); all
        its windows through the backbone in one call (so that a strategy's batch statistics,
        e.g. ``proxy`` with ``mean_over="batch"``, cover exactly its windows); their last-block
        tokens ``[n, C, gh, gw]`` spliced into one map on the patch grid (times
        :func:`splice_ratio`), averaged where windows overlap (:func:`stitch_windows`, each
        window map resized to its box when the strategy's grid differs); ``aggregator(map,
        image)``; the tower's final norm and projection, L2-normalised. ``regions``
        (optional ``[B, H, W]``): as in :meth:`encode_image` (here only the ``label_refiner``
        reads them).

        Returns:
            :class:`ImageFeatures` holding one whole-image map per image: ``dense [B, D, h',
            w']`` (the aggregator's grid), ``windows = [(0, H, 0, W)]`` and ``resized_size =
            image_size``, so decoding resizes the scores once, to the input size.
        """
        aggregator = self.aggregator
        if aggregator is None:
            raise RuntimeError("encode_spliced needs an aggregator (segmentor.aggregator).")
        bb: Any = self.backbone  # a tower backbone (checked by _check_splice)
        images, crops, windows, (hr, wr) = self._resize_and_window(images)
        b, p = images.shape[0], bb.patch_size
        y1, y2, x1, x2 = windows[0]
        clip_grid = ((y2 - y1) // p, (x2 - x1) // p)
        dense = []
        with self._autocast():
            for i in range(b):
                batch = crops[i::b]  # crops are window-major: image i's windows, in order
                if self.pad_to_patch:
                    batch = self.pad_images(batch)
                tokens, grid, _ = bb.forward_tokens(batch, extras)
                maps = tokens[:, 1:].transpose(1, 2).reshape(len(windows), -1, *grid).float()
                r = splice_ratio(grid, clip_grid)
                boxes = [(a * r // p, c * r // p, d * r // p, e * r // p) for a, c, d, e in windows]
                spliced = stitch_windows(maps, boxes, 1, (hr * r // p, wr * r // p))
                mixed = aggregator(spliced, images[i : i + 1])
                x = bb.project(mixed.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
                dense.append(F.normalize(x.float(), dim=1))
        size = (int(images.shape[2]), int(images.shape[3]))
        return ImageFeatures(
            dense=torch.cat(dense, dim=0),
            windows=[(0, size[0], 0, size[1])],
            batch_size=b,
            resized_size=size,
            image_size=size,
            images=images if self._keeps_images else None,
            regions=self.image_regions(images, regions),  # for a label_refiner
        )

    @torch.no_grad()
    def encode_images(
        self, images: Sequence[Tensor], text: ClassEmbeddings | None = None
    ) -> list[ImageFeatures]:
        """:meth:`encode_image` of images of different sizes, one :class:`ImageFeatures`
        (``batch_size`` 1) per image.

        Each image is resized and cut into windows on its own; then the crops of *all* images
        are run through the backbone together, ``window_batch_size`` crops per call, crops of
        the same size sharing a call (e.g. the ``window`` x ``window`` crops of every image
        larger than a window, or whole small images of one size), and split back per image.
        The features equal :meth:`encode_image` image by image (up to float rounding).

        Args:
            images: a non-empty sequence of ``[3, H, W]`` (or ``[1, 3, H, W]``) RGB tensors in
                ``[0, 1]`` (float) or ``uint8``; sizes may differ (a ``[B, 3, H, W]`` tensor is
                taken as ``B`` images).

        Raises:
            ValueError: an empty sequence, or a bad image (the message names its index).
        """
        extras = self._text_extras(text)
        if isinstance(images, Tensor) and images.ndim == 4:
            images = list(images)
        if len(images) == 0:
            raise ValueError("images is empty: give at least one image.")
        if self.aggregator is not None:  # each image's windows are spliced together
            return [
                self.encode_spliced(img if img.ndim == 4 else img.unsqueeze(0), extras)
                for img in images
            ]
        prepared = []
        for i, img in enumerate(images):
            if isinstance(img, Tensor) and img.ndim == 3:
                img = img.unsqueeze(0)
            if isinstance(img, Tensor) and img.ndim == 4 and img.shape[0] != 1:
                raise ValueError(
                    f"images[{i}]: expected one image [3, H, W] or [1, 3, H, W], got "
                    f"{tuple(img.shape)}."
                )
            try:
                prepared.append(self._resize_and_window(img))
            except ValueError as e:
                raise ValueError(f"images[{i}]: {e}") from e
        regions = [self.image_regions(p[0]) for p in prepared]
        crop_regions = [
            self._crop_regions(r, p[3], p[2]) for r, p in zip(regions, prepared, strict=True)
        ]
        # group the crops by size: (image, first crop) spans per size, in order of appearance
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (_, crops, _, _) in enumerate(prepared):
            groups.setdefault((crops.shape[2], crops.shape[3]), []).append(i)
        dense: list[Tensor | None] = [None] * len(prepared)
        aux: list[dict[str, Tensor]] = [{} for _ in prepared]
        inter: list[dict[str, Tensor]] = [{} for _ in prepared]
        for members in groups.values():
            group_regions = [crop_regions[i] for i in members]
            out, maps, blocks = self._forward_crops(
                torch.cat([prepared[i][1] for i in members], dim=0),
                extras,
                None
                if any(r is None for r in group_regions)
                else torch.cat([r for r in group_regions if r is not None], dim=0),
            )
            start = 0
            for i in members:
                n = prepared[i][1].shape[0]
                dense[i] = out[start : start + n]
                aux[i] = {name: m[start : start + n] for name, m in maps.items()}
                inter[i] = {name: m[start : start + n] for name, m in blocks.items()}
                start += n
        result = []
        for i, (img, _, windows, resized) in enumerate(prepared):
            d = dense[i]
            assert d is not None
            result.append(
                ImageFeatures(
                    dense=d,
                    windows=windows,
                    batch_size=1,
                    resized_size=resized,
                    image_size=(img.shape[2], img.shape[3]),
                    images=img if self._keeps_images else None,
                    aux=aux[i],
                    intermediates=inter[i],
                    regions=regions[i],
                    global_view=self.global_view,
                )
            )
        return result

    # -- text side ------------------------------------------------------------------------
    def encode_text(
        self, vocabulary: Vocabulary | Sequence[str | Sequence[str]]
    ) -> ClassEmbeddings:
        """Class-name embeddings (cached): see :class:`TextEncoder`; with per-template
        embeddings too when the head takes them (``head.per_template``)."""
        if self.head_per_template:
            return self.text_encoder(vocabulary, per_template=True).to(self.device)
        return self.text_encoder(vocabulary).to(self.device)

    # -- window maps ----------------------------------------------------------------------
    def _window_chunks(self, feats: ImageFeatures) -> range:
        return range(0, feats.dense.shape[0], max(1, self.window_batch_size))

    def head_scores(
        self, dense: Tensor, embeds: Tensor, intermediates: Sequence[Tensor] | None = None
    ) -> Tensor:
        """The head on window features: ``[n, D, h, w]``, ``[N, D]`` (``[N, P, D]`` for a
        per-template head) and, for a head with ``intermediate_layers``, their block outputs
        -> ``[n, N, h', w']`` (``h' = h, w' = w`` for most heads; a multiple for heads that
        upsample, e.g. CAT-Seg's 4x)."""
        if self.head_layers:
            out = self.head(dense, embeds, intermediates=intermediates)
        else:
            out = self.head(dense, embeds)
        h, w = dense.shape[-2:]
        want = (dense.shape[0], embeds.shape[0], h, w)
        ok = (
            isinstance(out, Tensor)
            and out.ndim == 4
            and tuple(out.shape[:2]) == want[:2]
            and out.shape[2] % h == 0
            and out.shape[3] % w == 0
            and out.shape[2] // h == out.shape[3] // w > 0
        )
        if not ok:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"The head {type(self.head).__name__} returned {got}; a segmentation head maps "
                f"dense [n, D, h, w] and embeds [N, D] to [n, N, h, w] = {want} (or a whole "
                "multiple of h and w, the same for both)."
            )
        return out

    @torch.no_grad()
    def merge_windows(
        self,
        maps: Tensor,
        feats: ImageFeatures,
        output_size: tuple[int, int] | None = None,
        activation: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Window maps ``[num_windows * B (+ B), K, h, w]`` -> ``[B, K, H, W]`` at
        ``output_size`` (default the input size; ``feats.resized_size`` for the resized image).

        The windows are stitched by :func:`stitch_windows` (``activation`` applied to each map
        upsampled to its crop); with a global view (``feats.global_view``), its map is
        upsampled to the crop size, activated, resized to the resized image and averaged 1:1
        with the stitched map, as CAT-Seg's official evaluation does."""
        out_size: tuple[int, int] = (
            feats.image_size if output_size is None else (int(output_size[0]), int(output_size[1]))
        )
        n = feats.num_window_maps
        stitched = stitch_windows(
            maps[:n],
            feats.windows,
            feats.batch_size,
            feats.resized_size,
            None if feats.global_view else out_size,
            self.window_batch_size,
            activation,
        )
        if not feats.global_view:
            return stitched
        if maps.shape[0] != n + feats.batch_size:
            raise ValueError(
                f"Expected {n} window maps and {feats.batch_size} global views, got "
                f"{maps.shape[0]} maps."
            )
        y1, y2, x1, x2 = feats.windows[0]
        whole = F.interpolate(
            maps[n:], size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False
        )
        if activation is not None:
            whole = activation(whole)
        whole = F.interpolate(whole, size=feats.resized_size, mode="bilinear", align_corners=False)
        out = (stitched + whole) / 2
        if tuple(out.shape[-2:]) == tuple(out_size):
            return out
        return F.interpolate(out, size=out_size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def aux_map(self, feats: ImageFeatures, name: str) -> Tensor:
        """The refiner's auxiliary map ``name`` at the input size ``[B, K, H, W]``: window maps
        stitched like the logits (:meth:`merge_windows`)."""
        if name not in feats.aux:
            raise KeyError(
                f"These features carry no auxiliary map {name!r} (available: {sorted(feats.aux)})."
            )
        return self.merge_windows(feats.aux[name], feats)

    @torch.no_grad()
    def window_logits(self, feats: ImageFeatures, text: ClassEmbeddings) -> Tensor:
        """Head scores per name at the resized size: ``[B, N, Hr, Wr]`` (window scores
        upsampled to their crop, averaged where windows overlap)."""
        return self.merge_windows(self.window_scores(feats, text), feats, feats.resized_size)

    def window_scores(self, feats: ImageFeatures, text: ClassEmbeddings) -> Tensor:
        """The head on every window map of ``feats``, ``window_batch_size`` maps at a time:
        ``[num_maps, N, h', w']`` in the order of ``feats.dense`` (see :meth:`head_scores`)."""
        embeds = self._head_embeds(text, feats.dense.device)
        step = max(1, self.window_batch_size)
        return torch.cat(
            [
                self.head_scores(
                    feats.dense[s : s + step],
                    embeds,
                    self._window_intermediates(feats, s, s + step) if self.head_layers else None,
                )
                for s in self._window_chunks(feats)
            ],
            dim=0,
        )

    def _to_input_size(self, logits: Tensor, feats: ImageFeatures) -> Tensor:
        if tuple(logits.shape[-2:]) == tuple(feats.image_size):
            return logits
        return F.interpolate(logits, size=feats.image_size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def name_logits(self, feats: ImageFeatures, text: ClassEmbeddings) -> Tensor:
        """Head scores per name at the input size: ``[B, N, H, W]`` (before ``logit_scale``):
        :meth:`window_logits` resized to the input size (bilinear) and refined by PAMR if
        configured."""
        logits = self._to_input_size(self.window_logits(feats, text), feats)
        if self.pamr is not None:
            assert feats.images is not None
            logits = self.pamr(self.backbone.normalize(feats.images), logits)
        return logits

    @torch.no_grad()
    def window_probs(
        self, feats: ImageFeatures, text: ClassEmbeddings, rule_class: int | None = None
    ) -> Tensor:
        """Class probabilities of every window at feature resolution, ``[num_windows * B, C,
        h, w]`` (window-major): ``softmax(logit_scale * scores)`` over names, max over each
        class's names, then, when ``rule_class`` is a class index (see
        :meth:`rule_background`), the ``saliency_rule`` on those probabilities (that class set
        to 1.0 where the top probability is ``< delta`` and the saliency is not ``> 0.5``)."""
        embeds = self._head_embeds(text, feats.dense.device)
        n2c = text.name_to_class.to(feats.dense.device)
        rule = self.saliency_rule if rule_class is not None else None
        if rule_class is not None:
            if not 0 <= rule_class < text.num_classes:
                raise ValueError(
                    f"The background rule labels pixels as class {rule_class}, but the "
                    f"vocabulary has {text.num_classes} classes; set model.background_index."
                )
            if rule is None or rule.aux_key not in feats.aux:
                raise ValueError("A background rule needs a saliency_rule and its saliency map.")
        out = []
        step = max(1, self.window_batch_size)
        for start in self._window_chunks(feats):
            inter = (
                self._window_intermediates(feats, start, start + step) if self.head_layers else None
            )
            cos = self.head_scores(feats.dense[start : start + step], embeds, inter)
            probs = torch.softmax(cos.mul_(self.logit_scale), dim=1)
            probs = max_over_synonyms(probs, n2c, text.num_classes)
            if rule is not None and rule_class is not None:  # rule is None without a class
                sal = feats.aux[rule.aux_key][start : start + step]
                probs = rule.on_probs(probs, sal, rule_class)
            out.append(probs)
        return torch.cat(out, dim=0)

    # -- decoding -------------------------------------------------------------------------
    def rule_background(self, vocabulary: Vocabulary) -> int | None:
        """The class the ``saliency_rule`` labels pixels as, or ``None`` when the rule does not
        apply to this vocabulary (no rule, ``background_rule=False``, or no background class
        under ``background_rule=None``).

        The class is ``background_index`` when given, else the vocabulary's first class named
        like background (:attr:`Vocabulary.background_index`); ``"force"`` without an index
        means class 0.

        Raises:
            ValueError: ``background_rule=True`` and that class is not a background class, or
                an index outside the vocabulary.
        """
        if self.saliency_rule is None or self.background_rule is False:
            return None
        n = vocabulary.num_classes
        if self.background_rule == "force":
            forced = 0 if self.background_index is None else self.background_index
            if not 0 <= forced < n:
                raise ValueError(
                    f"background_rule='force' labels pixels as class {forced}, but the vocabulary "
                    f"has {n} classes; set model.background_index."
                )
            return forced
        bg = (
            self.background_index
            if self.background_index is not None
            else vocabulary.background_index
        )
        ok = bg is not None and 0 <= bg < n and is_background_class(vocabulary.classes[bg])
        if self.background_rule and not ok:
            got = vocabulary.classes[bg] if bg is not None and 0 <= bg < n else "no such class"
            raise ValueError(
                f"The background rule labels pixels as a background class (one of its names in "
                f"{sorted(BACKGROUND_NAMES)}), got {got}; put 'background' in the vocabulary or "
                "set model.background_rule=False."
            )
        return bg if ok else None

    def uses_background_rule(self, vocabulary: Vocabulary) -> bool:
        """Whether :meth:`decode` applies the ``saliency_rule`` for this vocabulary."""
        return self.rule_background(vocabulary) is not None

    @torch.no_grad()
    def decode(
        self,
        feats: ImageFeatures,
        text: ClassEmbeddings,
        prob_thd: float | None = None,
        return_probs: bool = True,
        name_chunk: int = 32,
        tile_pixels: int | None = None,
    ) -> SegmentationOutput:
        """Labels (and class probabilities) from cached image features and class embeddings,
        in the order ``self.decode_order`` (see the class docstring).

        The ``saliency_rule`` applies when the features carry its saliency map and
        :meth:`rule_background` gives a class; ``prob_thd`` / ``area_thd`` act on the final
        maps.

        With ``return_probs=False`` the labels are made in strips of about ``tile_pixels``
        input pixels (:data:`~ovdense.modeling.segmentors.tiled.DEFAULT_TILE_PIXELS` when
        ``None``), ``name_chunk`` names (classes in the ``"paper"`` order) at a time, in both
        orders and with ``prob_thd``, ``area_thd`` (two passes: the class areas first) and the
        ``saliency_rule``: the only input-size array is the ``int64`` label map (8 bytes per
        pixel), whatever the vocabulary; window scores stay at feature resolution. The maps are
        stitched and resized per strip (:mod:`~ovdense.modeling.segmentors.tiled`), so any
        ``tile_pixels`` gives the same labels bit for bit; they equal the ``return_probs=True``
        labels up to float rounding (its resize is ``F.interpolate``). PAMR and a
        ``post_refiner`` need every map at once: with either, ``return_probs=False`` only drops
        the probabilities from the output (the full path runs; memory grows with the
        vocabulary). The ``label_refiner``, if any, acts last on the labels.
        """
        out = self._decode(feats, text, prob_thd, return_probs, name_chunk, tile_pixels)
        if self.label_refiner is not None:
            if feats.regions is None:
                raise ValueError(
                    "The label_refiner needs the images' region maps, which these features do "
                    "not carry (encoded before mask_source was set): encode the image again."
                )
            out.labels = self.label_refiner(out.labels, feats.regions.to(out.labels.device))
        return out

    def _decode(
        self,
        feats: ImageFeatures,
        text: ClassEmbeddings,
        prob_thd: float | None,
        return_probs: bool,
        name_chunk: int,
        tile_pixels: int | None,
    ) -> SegmentationOutput:
        rule = self.saliency_rule
        has_saliency = rule is not None and rule.aux_key in feats.aux
        bg = self.rule_background(text.vocabulary) if has_saliency else None
        name_chunk = check_int("name_chunk", name_chunk, minimum=1)
        if self.decode_order == "sigmoid":
            return self._decode_sigmoid(feats, text, prob_thd, return_probs, name_chunk)
        if not return_probs and not self._keeps_images and not feats.global_view:
            tile = DEFAULT_TILE_PIXELS if tile_pixels is None else tile_pixels
            tile = check_int("tile_pixels", tile, minimum=1)
            labels = self._decode_labels_tiled(feats, text, bg, prob_thd, name_chunk, tile)
            return SegmentationOutput(labels=labels, probs=None, vocabulary=text.vocabulary)
        if self.decode_order == "paper":
            return self._decode_probs_first(feats, text, bg, prob_thd, return_probs)
        return self._decode_logits_first(feats, text, bg, prob_thd, return_probs)

    def _sigmoid_probs(self, scores: Tensor, feats: ImageFeatures) -> Tensor:
        """Head scores of every window ``[n, K, h', w']`` -> per-name sigmoid probabilities at
        the input size ``[B, K, H, W]`` (the ``"sigmoid"`` order's stitching)."""
        scale = self.logit_scale
        return self.merge_windows(scores, feats, activation=lambda t: torch.sigmoid(t * scale))

    def _decode_sigmoid(
        self,
        feats: ImageFeatures,
        text: ClassEmbeddings,
        prob_thd: float | None,
        return_probs: bool,
        name_chunk: int,
    ) -> SegmentationOutput:
        """The ``"sigmoid"`` order (see the class docstring). The head scores every name of
        every window at once (its class aggregation sees the whole vocabulary); without
        ``return_probs`` (and without ``area_thd``, PAMR or a ``post_refiner``) the input-size
        probabilities are made ``name_chunk`` names at a time, keeping a running maximum, so
        the memory does not grow with the vocabulary."""
        dev = feats.dense.device
        scores = self.window_scores(feats, text)
        n2c = text.name_to_class.to(dev)
        full = return_probs or self.area_thd is not None or self._keeps_images
        if full:
            probs = max_over_synonyms(self._sigmoid_probs(scores, feats), n2c, text.num_classes)
            probs = self._refine_probs(feats, probs)
            labels = self.assign_labels(probs, prob_thd, text.vocabulary)
            return SegmentationOutput(
                labels=labels, probs=probs if return_probs else None, vocabulary=text.vocabulary
            )
        best: Tensor | None = None
        index: Tensor | None = None
        for s in range(0, scores.shape[1], name_chunk):
            top, arg = self._sigmoid_probs(scores[:, s : s + name_chunk], feats).max(dim=1)
            if best is None or index is None:
                best, index = top, arg
            else:
                better = top > best
                index = torch.where(better, arg + s, index)
                best = torch.maximum(best, top)
        assert best is not None and index is not None
        labels = n2c[index]
        thd = self._prob_thd(prob_thd)
        if thd > 0:
            labels[best < thd] = self.resolve_background(text.vocabulary, "prob_thd")
        return SegmentationOutput(labels=labels, probs=None, vocabulary=text.vocabulary)

    def _decode_logits_first(
        self,
        feats: ImageFeatures,
        text: ClassEmbeddings,
        rule_class: int | None,
        prob_thd: float | None,
        return_probs: bool,
    ) -> SegmentationOutput:
        logits = self.name_logits(feats, text)
        probs = torch.softmax(logits.mul_(self.logit_scale), dim=1)
        probs = max_over_synonyms(probs, text.name_to_class.to(probs.device), text.num_classes)
        probs = self._post_refine(feats, probs)
        labels = self.assign_labels(probs, prob_thd, text.vocabulary)
        if rule_class is not None:
            assert self.saliency_rule is not None
            sal = self.aux_map(feats, self.saliency_rule.aux_key).to(probs.device)
            labels = self.saliency_rule.on_labels(labels, probs, sal, rule_class)
        return SegmentationOutput(
            labels=labels, probs=probs if return_probs else None, vocabulary=text.vocabulary
        )

    def _decode_probs_first(
        self,
        feats: ImageFeatures,
        text: ClassEmbeddings,
        rule_class: int | None,
        prob_thd: float | None,
        return_probs: bool,
    ) -> SegmentationOutput:
        wp = self.window_probs(feats, text, rule_class)
        probs = self.merge_windows(wp, feats)
        # PAMR, if set, refines the averaged probability maps (not in CLIP-DINOiser's code)
        probs = self._refine_probs(feats, probs)
        labels = self.assign_labels(probs, prob_thd, text.vocabulary)
        return SegmentationOutput(
            labels=labels, probs=probs if return_probs else None, vocabulary=text.vocabulary
        )

    # -- labels-only decode in strips -----------------------------------------------------
    def _decode_labels_tiled(
        self,
        feats: ImageFeatures,
        text: ClassEmbeddings,
        rule_class: int | None,
        prob_thd: float | None,
        name_chunk: int,
        tile_pixels: int,
    ) -> Tensor:
        """The labels of :meth:`decode` a strip of rows at a time (see its docstring).

        ``"ovdense"`` order: window head scores at feature resolution (all names), then per
        strip and chunk of names the stitched input-size scaled logits, reduced to a streaming
        softmax (best name, its logit, the sum of ``exp(logit - best)``). ``"paper"`` order:
        :meth:`window_probs` (the saliency rule already applied), then per strip and chunk of
        classes a running max. ``area_thd`` needs the class areas of the unsuppressed argmax
        first: one more pass over the strips."""
        dev = feats.dense.device
        b = feats.batch_size
        h, w = feats.image_size
        paper = self.decode_order == "paper"
        n2c = text.name_to_class.to(dev)
        if paper:
            maps = self.window_probs(feats, text, rule_class)
        else:
            embeds = self._head_embeds(text, dev)
            step = max(1, self.window_batch_size)
            maps = torch.cat(
                [
                    self.head_scores(
                        feats.dense[s : s + step],
                        embeds,
                        self._window_intermediates(feats, s, s + step)
                        if self.head_layers
                        else None,
                    )
                    for s in self._window_chunks(feats)
                ],
                dim=0,
            )
        strip = StripMaps(
            feats.windows,
            b,
            (maps.shape[-2], maps.shape[-1]),
            feats.resized_size,
            feats.image_size,
            dev,
        )
        bounds = strip_bounds(h, w, tile_pixels)
        c = text.num_classes
        thd = self._prob_thd(prob_thd)
        bg = 0
        if thd > 0 or self.area_thd is not None:
            bg = self.resolve_background(text.vocabulary, "prob_thd" if thd > 0 else "area_thd")
        keep: Tensor | None = None  # [B, C] classes kept by the area rule
        if self.area_thd is not None:
            counts = torch.zeros(b, c, dtype=torch.float64, device=dev)
            offsets = (torch.arange(b, device=dev) * c)[:, None, None]
            for r0, r1 in bounds:
                top = self._strip_best(strip, maps, r0, r1, name_chunk, paper, None)
                cls = top[1] if paper else n2c[top[1]]
                counts += torch.bincount((cls + offsets).flatten(), minlength=b * c).view(b, c)
            area_fg = counts.to(maps.dtype)
            area_fg[:, bg] = 0
            keep = area_fg > self.area_thd * area_fg.sum(dim=1, keepdim=True)
            keep[:, bg] = True
        ovdense_rule = rule_class is not None and not paper
        labels = torch.empty((b, h, w), dtype=torch.long, device=dev)
        for r0, r1 in bounds:
            best, index, total = self._strip_best(strip, maps, r0, r1, name_chunk, paper, keep, n2c)
            lab = index if paper else n2c[index]
            if thd > 0:
                if paper:
                    uncertain = best < thd
                elif keep is None:
                    uncertain = total * thd > 1  # top probability 1 / total < thd
                else:  # best = kept best logit - best logit: top kept probability exp(best) / total
                    uncertain = best.exp() < total * thd
                lab[uncertain] = bg
            if ovdense_rule:
                assert self.saliency_rule is not None and rule_class is not None
                sal = strip(feats.aux[self.saliency_rule.aux_key][:, :1], r0, r1)[:, 0]
                top_prob = total.reciprocal()  # of all names (the rule ignores area_thd)
                lab[(top_prob < self.saliency_rule.delta) & (sal < 0.5)] = rule_class
            labels[:, r0:r1] = lab
        return labels

    def _strip_best(
        self,
        strip: StripMaps,
        maps: Tensor,
        r0: int,
        r1: int,
        chunk: int,
        paper: bool,
        keep: Tensor | None,
        n2c: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Rows ``[r0, r1)``: ``(best, index, total)`` over the channels of ``maps``, a
        ``chunk`` at a time (``n2c``: each name's class, for ``keep`` in the ``"ovdense"`` order).

        ``"paper"`` (probabilities per class): ``best`` the top probability among the classes
        ``keep`` keeps (all when ``None``; the others count as 0, as ``assign_labels``
        multiplies them), ``index`` its class, ``total`` unused (empty). ``"ovdense"`` (head
        scores per name): ``index`` the best name (of a kept class), ``total`` the sum over all
        names of ``exp(s * logit - s * best logit)`` (``s = logit_scale``), ``best`` the kept
        best scaled logit minus the best scaled logit of all names (0 without ``keep``)."""
        n = maps.shape[1]
        dev = maps.device
        shape = (strip.batch_size, r1 - r0, strip.image_size[1])
        best = torch.full(shape, float("-inf"), dtype=maps.dtype, device=dev)
        index = torch.zeros(shape, dtype=torch.long, device=dev)
        if paper:
            for s in range(0, n, chunk):
                part = strip(maps[:, s : s + chunk], r0, r1)
                if keep is not None:
                    part.mul_(keep[:, s : s + chunk, None, None].to(part.dtype))
                top, arg = part.max(dim=1)
                better = top > best
                torch.where(better, arg.add_(s), index, out=index)
                torch.maximum(best, top, out=best)
            return best, index, best.new_empty(0)
        total = torch.zeros(shape, dtype=maps.dtype, device=dev)
        kbest = best.clone() if keep is not None else None
        name_keep = keep[:, n2c] if keep is not None and n2c is not None else None  # [B, N]
        for s in range(0, n, chunk):
            part = strip(maps[:, s : s + chunk], r0, r1).mul_(self.logit_scale)
            if name_keep is not None:
                assert kbest is not None
                masked = part.masked_fill(~name_keep[:, s : s + chunk, None, None], float("-inf"))
                ktop, karg = masked.max(dim=1)
                del masked
                torch.where(ktop > kbest, karg.add_(s), index, out=index)
                torch.maximum(kbest, ktop, out=kbest)
                top = part.amax(dim=1)
            else:
                top, arg = part.max(dim=1)
                torch.where(top > best, arg.add_(s), index, out=index)
            new_best = torch.maximum(best, top)
            total.mul_(best.sub_(new_best).exp_())
            total.add_(part.sub_(new_best.unsqueeze(1)).exp_().sum(dim=1))
            del part
            best = new_best
        if kbest is not None:
            return kbest.sub_(best), index, total
        return best.zero_(), index, total

    def forward(
        self, images: Tensor, vocabulary: Vocabulary | Sequence[str | Sequence[str]]
    ) -> SegmentationOutput:
        """Segment a batch of same-size images ``[B, 3, H, W]`` (RGB in ``[0, 1]``)."""
        text = self.encode_text(vocabulary)
        return self.decode(self.encode_image(images, text), text)

    @torch.no_grad()
    def segment_batch(
        self,
        images: Sequence[Tensor],
        vocabulary: Vocabulary | Sequence[str | Sequence[str]],
        prob_thd: float | None = None,
        return_probs: bool = True,
    ) -> list[SegmentationOutput]:
        """Segment images of different sizes: one :class:`SegmentationOutput` per image, with
        ``labels [1, H, W]`` and ``probs [1, C, H, W]`` at that image's size.

        The windows of all images share backbone calls (:meth:`encode_images`), the text is
        encoded once, and each image is decoded on its own (:meth:`decode`); the results equal
        :meth:`forward` image by image.

        Args:
            images: a non-empty sequence of ``[3, H, W]`` (or ``[1, 3, H, W]``) RGB tensors in
                ``[0, 1]`` or ``uint8``.
            vocabulary: the classes, as for :meth:`forward`.
            prob_thd, return_probs: as for :meth:`decode`.
        """
        text = self.encode_text(vocabulary)
        feats = self.encode_images(images, text)
        return [self.decode(f, text, prob_thd, return_probs) for f in feats]
