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

from ..backbones import AttentionStrategy, dense_backbone_for
from ..heads import CosineSegHead, max_over_synonyms
from ..text import ClassEmbeddings, TextEncoder, Vocabulary

__all__ = [
    "ImageFeatures",
    "SegmentationOutput",
    "TrainingFreeSegmentor",
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
        prob_thd: pixels whose top class probability is below this become ``background_index``.
        area_thd: SCLIP's rule: non-background classes covering at most this fraction of the
            non-background area are suppressed (``None``: off).
        background_index: the class index that thresholds assign (class 0 in the benchmarks).
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
        background_index: int = 0,
        pamr: nn.Module | None = None,
        precision: str = "fp32",
        text_cache_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
        if window_batch_size < 1:
            raise ValueError("window_batch_size must be >= 1.")
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
            images: ``[B, 3, H, W]`` RGB in ``[0, 1]``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W] RGB, got {tuple(images.shape)}.")
        images = images.to(self.device, torch.float32)
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
            labels = self.assign_labels(probs, prob_thd)
            return SegmentationOutput(labels=labels, probs=probs, vocabulary=text.vocabulary)
        low = self.window_logits(feats, text)
        b, n = low.shape[:2]
        h, w = feats.image_size
        best = low.new_full((b, h, w), float("-inf"))
        best_name = torch.zeros((b, h, w), dtype=torch.long, device=low.device)
        lse = low.new_full((b, h, w), float("-inf"))
        for start in range(0, n, name_chunk):
            part = self._to_input_size(low[:, start : start + name_chunk], feats)
            part = part.mul_(self.logit_scale)
            top, arg = part.max(dim=1)
            better = top > best
            best = torch.where(better, top, best)
            best_name = torch.where(better, arg + start, best_name)
            lse = torch.logaddexp(lse, torch.logsumexp(part, dim=1))
        labels = text.name_to_class.to(low.device)[best_name]
        thd = self.prob_thd if prob_thd is None else float(prob_thd)
        if thd > 0:
            self._check_background(text.num_classes)
            labels[torch.exp(best - lse) < thd] = self.background_index
        return SegmentationOutput(labels=labels, probs=None, vocabulary=text.vocabulary)

    def _check_background(self, num_classes: int) -> None:
        if not 0 <= self.background_index < num_classes:
            raise ValueError(
                f"background_index {self.background_index} is not a class of this "
                f"{num_classes}-class vocabulary; thresholds need a background class (put it "
                "first, e.g. 'background,cat,dog')."
            )

    def assign_labels(self, probs: Tensor, prob_thd: float | None = None) -> Tensor:
        """Argmax with SCLIP's area rule and the background threshold (probs: [B, C, H, W])."""
        thd = self.prob_thd if prob_thd is None else float(prob_thd)
        bg = self.background_index
        c = probs.shape[1]
        if thd > 0 or self.area_thd is not None:
            self._check_background(c)
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
