"""Training-time augmentation of semantic-segmentation samples (random crops for trained heads).

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

__all__ = ["SemSegCropDataset", "photometric_distort"]


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
