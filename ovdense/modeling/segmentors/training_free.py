"""Training-free open-vocabulary semantic segmentation (the SCLIP-family inference protocol)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...utils.validation import check_fraction, check_int, check_real
from ..backbones import AttentionStrategy, dense_backbone_for
from ..heads import CosineSegHead, max_over_synonyms
from ..text import ClassEmbeddings, TextEncoder, Vocabulary

__all__ = [
    "ImageFeatures",
    "SegmentationOutput",
    "TrainingFreeSegmentor",
    "check_unit_images",
    "rescale_size",
    "sliding_windows",
]

PRECISIONS = ("fp32", "fp16", "bf16", "auto")


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


@dataclass
class ImageFeatures:
    """Image-side results cached by :class:`~ovdense.Predictor` (vocabulary-independent).

    Attributes:
        dense: ``[num_windows * B, D, gh, gw]`` window-major dense features.
        windows: crop boxes ``(y1, y2, x1, x2)`` in the resized image.
        batch_size: ``B``.
        resized_size: ``(Hr, Wr)`` after the short-side resize.
        image_size: ``(H, W)`` of the input.
        images: ``[B, 3, H, W]`` input in ``[0, 1]`` (kept for PAMR), or ``None``.
    """

    dense: Tensor
    windows: list[tuple[int, int, int, int]]
    batch_size: int
    resized_size: tuple[int, int]
    image_size: tuple[int, int]
    images: Tensor | None = None


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


class TrainingFreeSegmentor(nn.Module):
    """Dense CLIP + cosine head with the common inference protocol of REFERENCE §2.

    Pipeline: short-side resize (long side capped) -> sliding windows (batched) -> dense
    features -> cosine with class-name embeddings -> window logits upsampled and averaged ->
    upsample to the input size -> optional PAMR -> ``logit_scale`` x, softmax over names -> max
    over synonyms -> optional area / probability thresholds -> argmax.

    Args:
        clip: an open_clip model (see :func:`~ovdense.modeling.clip.load_clip`); its image tower
            becomes a dense backbone (:func:`dense_backbone_for`), its text tower a
            :class:`TextEncoder`.
        strategy, strategy_kwargs, pos_interp: last-block strategy and position interpolation.
        templates: prompt templates (name of a set or a list of format strings).
        short_side: resize the short side to this (``None``: keep the input size).
        max_long_side: cap of the long side in that resize.
        window, stride: sliding-window crop and stride in pixels (``window=None``: whole image).
        window_batch_size: windows per backbone call.
        logit_scale: multiplier of cosines before the softmax.
        prob_thd: pixels whose top class probability is below this (in ``[0, 1]``) become the
            background class; ``0`` is off.
        area_thd: SCLIP's rule: non-background classes covering at most this fraction (in
            ``[0, 1]``) of the non-background area are suppressed (``None``: off).
        background_index: the class the thresholds assign. ``None`` (default): the first class
            of the vocabulary named like background (``"background"``, ``"bg"``, ``"backdrop"``;
            :attr:`Vocabulary.background_index`); a threshold with no such class is an error,
            never a silent class 0. An ``int`` names it explicitly (a benchmark's class 0,
            whatever its names).
        pamr: an optional refiner applied to the upsampled logits, e.g.
            :class:`~ovdense.modeling.refiners.PAMR`.
        precision: ``"fp32"``, ``"fp16"`` / ``"bf16"`` (autocast; fp16 needs CUDA) or ``"auto"``
            (fp16 on CUDA, fp32 on CPU).
        text_cache_dir: on-disk cache of class embeddings (``None``: memory only).
    """

    def __init__(
        self,
        clip: nn.Module,
        strategy: str | AttentionStrategy = "vanilla",
        strategy_kwargs: dict[str, Any] | None = None,
        pos_interp: str = "size",
        templates: str | Sequence[str] = "openai_imagenet",
        short_side: int | None = 336,
        max_long_side: int | None = 2048,
        window: int | None = 224,
        stride: int | None = 112,
        window_batch_size: int = 8,
        logit_scale: float = 40.0,
        prob_thd: float = 0.0,
        area_thd: float | None = None,
        background_index: int | None = None,
        pamr: nn.Module | None = None,
        precision: str = "fp32",
        text_cache_dir: str | os.PathLike | None = None,
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
        self.backbone = dense_backbone_for(
            clip, strategy=strategy, strategy_kwargs=strategy_kwargs, pos_interp=pos_interp
        )
        self.text_encoder = TextEncoder(clip, templates=templates, cache_dir=text_cache_dir)
        self.head = CosineSegHead()
        self.pamr = pamr
        self.short_side = short_side
        self.max_long_side = max_long_side
        self.window = window
        self.stride = stride
        self.window_batch_size = window_batch_size
        self.logit_scale = float(logit_scale)
        self.prob_thd = float(prob_thd)
        self.area_thd = area_thd
        self.background_index = background_index
        self.precision = precision
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def _autocast(self):
        dev = self.device.type
        prec = self.precision
        if prec == "auto":
            prec = "fp16" if dev == "cuda" else "fp32"
        if prec == "fp32":
            return nullcontext()
        if prec == "fp16" and dev != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU.")
        dtype = torch.float16 if prec == "fp16" else torch.bfloat16
        return torch.autocast(device_type=dev, dtype=dtype)

    # -- image side -----------------------------------------------------------------------
    @torch.no_grad()
    def encode_image(self, images: Tensor) -> ImageFeatures:
        """Dense features of every window of a batch of same-size images.

        Args:
            images: ``[B, 3, H, W]`` RGB in ``[0, 1]`` (float), or ``uint8`` in ``[0, 255]``
                (divided by 255). Float values outside ``[0, 1]`` are refused: see
                :func:`check_unit_images`.
        """
        images = check_unit_images(images).to(self.device, torch.float32)
        b, _, h, w = images.shape
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
        windows = sliding_windows(hr, wr, self.window, self.stride)
        crops = torch.cat([x[:, :, y1:y2, x1:x2] for (y1, y2, x1, x2) in windows], dim=0)
        feats = []
        starts = range(0, crops.shape[0], self.window_batch_size)
        # a bar only where the wait is long (huge images, small window batches)
        bar = tqdm(starts, desc="Windows", unit="batch", leave=False, disable=len(starts) < 8)
        with self._autocast():
            for start in bar:
                out = self.backbone(crops[start : start + self.window_batch_size])
                feats.append(out.dense.float())
        return ImageFeatures(
            dense=torch.cat(feats, dim=0),
            windows=windows,
            batch_size=b,
            resized_size=(hr, wr),
            image_size=(h, w),
            images=images if self.pamr is not None else None,
        )

    # -- text side ------------------------------------------------------------------------
    def encode_text(
        self, vocabulary: Vocabulary | Sequence[str | Sequence[str]]
    ) -> ClassEmbeddings:
        """Class-name embeddings (cached): see :class:`TextEncoder`."""
        return self.text_encoder(vocabulary).to(self.device)

    # -- decoding -------------------------------------------------------------------------
    @torch.no_grad()
    def window_logits(self, feats: ImageFeatures, text: ClassEmbeddings) -> Tensor:
        """Cosine logits per name at the resized size: ``[B, N, Hr, Wr]``.

        Window logits are upsampled (bilinear) to their crop size, summed where windows overlap
        and divided by the overlap count.
        """
        b = feats.batch_size
        hr, wr = feats.resized_size
        embeds = text.embeds.to(feats.dense.device)
        logits = feats.dense.new_zeros(b, embeds.shape[0], hr, wr)
        count = feats.dense.new_zeros(1, 1, hr, wr)
        y1, y2, x1, x2 = feats.windows[0]
        crop_size = (y2 - y1, x2 - x1)
        per_chunk = max(1, self.window_batch_size)
        num = len(feats.windows) * b
        for start in range(0, num, per_chunk):
            chunk = feats.dense[start : start + per_chunk]
            wl = F.interpolate(
                self.head(chunk, embeds), size=crop_size, mode="bilinear", align_corners=False
            )
            for j in range(wl.shape[0]):
                win, bi = divmod(start + j, b)
                y1, y2, x1, x2 = feats.windows[win]
                logits[bi, :, y1:y2, x1:x2] += wl[j]
                if bi == 0:
                    count[0, 0, y1:y2, x1:x2] += 1
        return logits.div_(count)

    def _to_input_size(self, logits: Tensor, feats: ImageFeatures) -> Tensor:
        if tuple(logits.shape[-2:]) == tuple(feats.image_size):
            return logits
        return F.interpolate(logits, size=feats.image_size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def name_logits(self, feats: ImageFeatures, text: ClassEmbeddings) -> Tensor:
        """Cosine logits per name at the input size: ``[B, N, H, W]`` (before ``logit_scale``):
        :meth:`window_logits` resized to the input size (bilinear) and refined by PAMR if
        configured."""
        logits = self._to_input_size(self.window_logits(feats, text), feats)
        if self.pamr is not None:
            assert feats.images is not None
            logits = self.pamr(self.backbone.normalize(feats.images), logits)
        return logits

    @torch.no_grad()
    def decode(
        self,
        feats: ImageFeatures,
        text: ClassEmbeddings,
        prob_thd: float | None = None,
        return_probs: bool = True,
        name_chunk: int = 32,
    ) -> SegmentationOutput:
        """Labels (and class probabilities) from cached image features and class embeddings.

        With ``return_probs=False`` (and no PAMR / area rule, which need every map at once) the
        input-size maps are made ``name_chunk`` names at a time with a streaming softmax, so
        thousands of classes on large images need memory for one chunk only; the labels are
        the same.
        """
        if return_probs or self.pamr is not None or self.area_thd is not None:
            logits = self.name_logits(feats, text)
            probs = torch.softmax(logits.mul_(self.logit_scale), dim=1)
            probs = max_over_synonyms(probs, text.name_to_class.to(probs.device), text.num_classes)
            labels = self.assign_labels(probs, prob_thd, text.vocabulary)
            return SegmentationOutput(labels=labels, probs=probs, vocabulary=text.vocabulary)
        low = self.window_logits(feats, text)
        b, n = low.shape[:2]
        h, w = feats.image_size
        # Streaming softmax: the best scaled logit so far, its name, and the sum of
        # exp(logit - best) over the names seen (rescaled when best grows). The top
        # probability is then 1 / total. Everything else is updated in place, so the peak is
        # one chunk of input-size maps plus four [B, H, W] maps.
        best = low.new_full((b, h, w), float("-inf"))
        best_name = torch.zeros((b, h, w), dtype=torch.int32, device=low.device)
        total = low.new_zeros((b, h, w))
        for start in range(0, n, name_chunk):
            # a fresh resized map, or a view of ``low`` (used once, so changed in place)
            part = self._to_input_size(low[:, start : start + name_chunk], feats)
            part.mul_(self.logit_scale)
            top, arg = part.max(dim=1)
            torch.where(top > best, arg.to(torch.int32).add_(start), best_name, out=best_name)
            new_best = torch.maximum(best, top)
            del top, arg
            total.mul_(best.sub_(new_best).exp_())
            total.add_(part.sub_(new_best.unsqueeze(1)).exp_().sum(dim=1))
            del part  # before the next chunk is made: one chunk alive at a time
            best = new_best
        labels = text.name_to_class.to(low.device)[best_name]
        thd = self._prob_thd(prob_thd)
        if thd > 0:
            bg = self.resolve_background(text.vocabulary, "prob_thd")
            labels[total * thd > 1] = bg  # top probability 1 / total < thd
        return SegmentationOutput(labels=labels, probs=None, vocabulary=text.vocabulary)

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

    def forward(
        self, images: Tensor, vocabulary: Vocabulary | Sequence[str | Sequence[str]]
    ) -> SegmentationOutput:
        """Segment a batch of same-size images ``[B, 3, H, W]`` (RGB in ``[0, 1]``)."""
        return self.decode(self.encode_image(images), self.encode_text(vocabulary))
