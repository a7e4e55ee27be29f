"""Training-time augmentation: semantic-segmentation samples (random crops for trained heads)
and detection items (large-scale jitter, :class:`LargeScaleJitter`).

:class:`SemSegCropDataset` wraps a dataset of ``{"image": uint8 [H, W, 3], "label": int64
[H, W]}`` samples (e.g. :func:`~ovdense.data.build_semseg_dataset`'s) the way
MaskFormer-family training (CAT-Seg's included) prepares COCO-Stuff: resize the short side,
random crop, SSD-style photometric distortion, random horizontal flip, pad to the crop size.
Randomness comes from torch's global generator, which :class:`~ovdense.engine.Trainer` seeds
(and its data-loader workers derive their seeds from).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LargeScaleJitter", "SemSegCropDataset", "photometric_distort"]


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _coin() -> bool:
    return bool(torch.rand(()) < 0.5)


def _rgb_to_hsv(img: Tensor) -> Tensor:
    r, g, b = img.unbind(0)
    maxc, _ = img.max(dim=0)
    minc, _ = img.min(dim=0)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-8), torch.zeros_like(maxc))
    d = delta.clamp_min(1e-8)
    h = torch.where(
        maxc == r, ((g - b) / d) % 6, torch.where(maxc == g, (b - r) / d + 2, (r - g) / d + 4)
    )
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc])


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    h, s, v = hsv.unbind(0)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = (i.long() % 6)[None]

    def pick(options: list[Tensor]) -> Tensor:
        return torch.stack(options).gather(0, i)[0]

    r, g, b = pick([v, q, p, p, t, v]), pick([t, v, v, q, p, p]), pick([p, p, t, v, v, q])
    return torch.stack([r, g, b])


def photometric_distort(img: Tensor) -> Tensor:
    """SSD's photometric distortion on a ``[3, H, W]`` RGB float image in ``[0, 1]``, each step
    with probability 1/2: brightness ``+-32/255``, contrast ``x[0.5, 1.5]`` (before or after the
    colour steps, at random), saturation ``x[0.5, 1.5]`` and hue ``+-18/180`` of the circle (in
    HSV), clipped to ``[0, 1]``."""
    img = img.clone()
    if _coin():
        img = (img + _uniform(-32, 32) / 255.0).clamp_(0, 1)
    contrast_first = _coin()

    def contrast(x: Tensor) -> Tensor:
        return (x * _uniform(0.5, 1.5)).clamp_(0, 1) if _coin() else x

    if contrast_first:
        img = contrast(img)
    sat, hue = _coin(), _coin()
    if sat or hue:
        hsv = _rgb_to_hsv(img)
        if sat:
            hsv[1] = (hsv[1] * _uniform(0.5, 1.5)).clamp_(0, 1)
        if hue:
            hsv[0] = (hsv[0] + _uniform(-18, 18) / 180.0) % 1.0
        img = _hsv_to_rgb(hsv).clamp_(0, 1)
    if not contrast_first:
        img = contrast(img)
    return img


class SemSegCropDataset(torch.utils.data.Dataset):
    """Random training crops of a semantic-segmentation dataset.

    Per sample: resize (bilinear image, nearest label) so that the short side is
    ``short_side`` (long side capped at ``max_long_side``), random ``crop_size`` crop,
    photometric distortion (:func:`photometric_distort`), horizontal flip with probability
    1/2, and padding to ``crop_size`` (image 0.5 grey, label ``ignore_label``) when the image is
    smaller.

    Args:
        dataset: samples with ``image`` (``uint8 [H, W, 3]`` array or tensor) and ``label``
            (``[H, W]`` integers).
        crop_size: ``(h, w)`` or one side.
        short_side: the resize target of the short side (``None``: no resize).
        max_long_side: cap of the long side in that resize.
        photometric: apply :func:`photometric_distort`.
        flip: random horizontal flips.
        ignore_label: the label of padded pixels.

    Returns (``__getitem__``):
        ``{"image": float32 [3, h, w] in [0, 1], "label": int64 [h, w]}``.
    """

    def __init__(
        self,
        dataset: Any,
        crop_size: int | Sequence[int] = 384,
        short_side: int | None = 384,
        max_long_side: int | None = 1333,
        photometric: bool = True,
        flip: bool = True,
        ignore_label: int = 255,
    ) -> None:
        self.dataset = dataset
        if isinstance(crop_size, int):
            self.crop_size = (crop_size, crop_size)
        else:
            ch, cw = crop_size
            self.crop_size = (int(ch), int(cw))
        self.short_side = short_side
        self.max_long_side = max_long_side
        self.photometric = photometric
        self.flip = flip
        self.ignore_label = int(ignore_label)

    def __len__(self) -> int:
        return len(self.dataset)

    def _resized_size(self, h: int, w: int) -> tuple[int, int]:
        if self.short_side is None:
            return h, w
        scale = self.short_side / min(h, w)
        if self.max_long_side is not None and max(h, w) * scale > self.max_long_side:
            scale = self.max_long_side / max(h, w)
        return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        sample = self.dataset[index]
        image = sample["image"]
        label = sample["label"]
        img = torch.as_tensor(np.asarray(image)).permute(2, 0, 1).float().div_(255.0)
        lab = torch.as_tensor(np.asarray(label)).long()
        h, w = lab.shape
        rh, rw = self._resized_size(h, w)
        if (rh, rw) != (h, w):
            img = F.interpolate(img[None], size=(rh, rw), mode="bilinear", align_corners=False)[0]
            img = img.clamp_(0, 1)
            lab = F.interpolate(lab[None, None].float(), size=(rh, rw), mode="nearest")[0, 0]
            lab = lab.long()
        ch, cw = self.crop_size
        y0 = int(torch.randint(0, max(rh - ch, 0) + 1, ()))
        x0 = int(torch.randint(0, max(rw - cw, 0) + 1, ()))
        img, lab = img[:, y0 : y0 + ch, x0 : x0 + cw], lab[y0 : y0 + ch, x0 : x0 + cw]
        if self.photometric:
            img = photometric_distort(img)
        if self.flip and _coin():
            img, lab = img.flip(-1), lab.flip(-1)
        ph, pw = ch - img.shape[1], cw - img.shape[2]
        if ph > 0 or pw > 0:
            img = F.pad(img, (0, max(pw, 0), 0, max(ph, 0)), value=0.5)
            lab = F.pad(lab, (0, max(pw, 0), 0, max(ph, 0)), value=self.ignore_label)
        return {"image": img.contiguous(), "label": lab.contiguous()}


class LargeScaleJitter(torch.utils.data.Dataset):
    """Large-scale jitter of detection items, F-ViT's OV-LVIS training pipeline (mmdet's
    ``Resize(ratio_range=(0.1, 2.0), keep_ratio=True)``, ``RandomCrop(crop_type=
    "absolute_range", recompute_bbox=True, allow_negative_crop=True)``,
    ``FilterAnnotations``, ``RandomFlip(0.5)``; the ``Pad`` to ``size`` is the detector's, see
    ``build_fvit(train_size=...)``).

    Per item: rescale so that the long side is ``size x r``, ``r`` uniform in ``ratio_range``
    (bilinear image, nearest masks, boxes scaled); crop a random window of at most
    ``size x size`` (the whole image when smaller); boxes shifted and clipped to the window, or
    with masks recomputed as the masks' tight boxes (``x2`` = last column + 1, as mmdet's
    ``BitmapMasks.get_bboxes``); boxes not wider and higher than ``min_box_size`` dropped (an
    image may end with no target: kept as background); a horizontal flip with probability
    ``flip``.

    Args:
        dataset: detection items (``{"image": float [3, H, W], "targets": {"boxes" [M, 4],
            "labels" [M], optional "masks" [M, H, W]}, "image_id"}``, e.g.
            :class:`~ovdense.data.detection.CocoDetection`).
        size: the output side bound (F-ViT OV-LVIS: 1024).
        ratio_range: the scale range (F-ViT: 0.1 to 2.0).
        flip: probability of a horizontal flip.
        min_box_size: boxes must be wider and higher than this (mmdet: 0.01 px; the F-ViT
            detector drops boxes under 1 px, so the OV-LVIS config filters at 1).

    Randomness comes from torch's global generator (seeded by the trainer).
    """

    def __init__(
        self,
        dataset: Any,
        size: int = 1024,
        ratio_range: tuple[float, float] = (0.1, 2.0),
        flip: float = 0.5,
        min_box_size: float = 0.01,
    ) -> None:
        lo, hi = (float(v) for v in ratio_range)
        if not 0 < lo <= hi:
            raise ValueError(f"ratio_range must be 0 < low <= high, got {ratio_range}.")
        if size < 1 or not 0 <= flip <= 1:
            raise ValueError(f"size must be >= 1 and flip in [0, 1], got {size}, {flip}.")
        self.dataset = dataset
        self.size, self.ratio_range = int(size), (lo, hi)
        self.flip, self.min_box_size = float(flip), float(min_box_size)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        image: Tensor = item["image"]
        t = item["targets"]
        boxes, labels = t["boxes"].float(), t["labels"]
        masks: Tensor | None = t.get("masks")
        h, w = int(image.shape[-2]), int(image.shape[-1])
        f = self.size * _uniform(*self.ratio_range) / max(h, w)
        nh, nw = max(1, int(h * f + 0.5)), max(1, int(w * f + 0.5))
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)
        image = image[0].clamp_(0, 1)
        boxes = boxes * boxes.new_tensor([nw / w, nh / h, nw / w, nh / h])
        if masks is not None and masks.shape[0]:
            masks = F.interpolate(masks[None].float(), size=(nh, nw), mode="nearest")[0]
            masks = masks.to(t["masks"].dtype)
        elif masks is not None:
            masks = masks.new_zeros(0, nh, nw)
        ch, cw = min(nh, self.size), min(nw, self.size)
        y0 = int(torch.randint(0, nh - ch + 1, ()))
        x0 = int(torch.randint(0, nw - cw + 1, ()))
        image = image[:, y0 : y0 + ch, x0 : x0 + cw]
        boxes = boxes - boxes.new_tensor([x0, y0, x0, y0])
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, cw)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, ch)
        if masks is not None:
            masks = masks[:, y0 : y0 + ch, x0 : x0 + cw]
            boxes = _tight_boxes(masks)
        keep = (boxes[:, 2] - boxes[:, 0] > self.min_box_size) & (
            boxes[:, 3] - boxes[:, 1] > self.min_box_size
        )
        boxes, labels = boxes[keep], labels[keep]
        if masks is not None:
            masks = masks[keep]
        if float(torch.rand(())) < self.flip:
            image = image.flip(-1)
            boxes = torch.stack([cw - boxes[:, 2], boxes[:, 1], cw - boxes[:, 0], boxes[:, 3]], 1)
            if masks is not None:
                masks = masks.flip(-1)
        targets: dict[str, Tensor] = {"boxes": boxes, "labels": labels}
        if masks is not None:
            targets["masks"] = masks.contiguous()
        return {"image": image.contiguous(), "targets": targets, "image_id": item["image_id"]}


def _tight_boxes(masks: Tensor) -> Tensor:
    """``[M, 4]`` XYXY boxes of ``[M, H, W]`` masks: first column / row, last + 1; zeros for an
    empty mask."""
    out = torch.zeros(masks.shape[0], 4)
    for i, m in enumerate(masks.bool()):
        ys = torch.nonzero(m.any(1)).flatten()
        xs = torch.nonzero(m.any(0)).flatten()
        if len(xs) and len(ys):
            out[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return out
