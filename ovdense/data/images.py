"""Unlabeled image folders for self-supervised training (e.g. CLIPSelf on COCO train2017).

Every image is resized so that its **long side** is ``S`` (aspect ratio kept) and zero-padded at
the bottom/right to an ``S x S`` square; the sample says which part is the image
(``valid_size``) and how the original pixels map to it (``scale``), so that boxes given in
original pixel coordinates (e.g. proposals) can be mapped onto the padded square.

Multi-scale training picks one size per batch in the collate function
(:class:`MultiScaleCollate`), deterministically from the batch's sample indices so that a
resumed run sees the same sizes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..utils.image import list_images, load_image

__all__ = ["ImageFolderDataset", "MultiScaleCollate", "collate_images", "resize_pad_square"]


def _check_size(size: int, what: str = "image_size") -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{what} must be a positive int, got {size!r}.")
    return int(size)


def resize_pad_square(image: Tensor, size: int) -> tuple[Tensor, tuple[int, int], float]:
    """Resize the long side to ``size`` (bilinear, antialiased) and zero-pad to a square.

    Args:
        image: ``[3, H, W]`` float image.
        size: Side ``S`` of the output square.

    Returns:
        The ``[3, S, S]`` image (content at the top-left), the content's ``(h, w)`` and the
        scale factor ``S / max(H, W)`` from input to output pixels.
    """
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        image = F.interpolate(
            image[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
        )[0].clamp_(0.0, 1.0)
    out = image.new_zeros(3, size, size)
    out[:, :nh, :nw] = image
    return out, (nh, nw), float(scale)


class ImageFolderDataset(Dataset):
    """All images of a folder, as ``S x S`` float tensors in ``[0, 1]`` (long side resized to
    ``S``, zero-padded bottom/right; see the module doc).

    Args:
        root: The folder (hidden files skipped; see :func:`~ovdense.utils.image.list_images`).
        image_size: ``S``; a sequence of sizes loads at the largest one (use
            :class:`MultiScaleCollate` with the same sizes to pick one per batch).
        recursive: Also list sub-folders.

    Each sample is a dict with ``image`` ``[3, S, S]`` float, ``valid_size`` ``[2]`` long (the
    content's ``h, w``), ``scale`` (float: original pixels -> ``image`` pixels), ``orig_size``
    ``[2]`` long (original ``H, W``), ``index`` (int) and ``path`` (str).

    Images are decoded lazily: an unreadable file raises a ``ValueError`` naming it when it is
    loaded (not at construction, so that opening a 118k-image folder stays instant).

    Raises:
        FileNotFoundError / NotADirectoryError: ``root`` is missing or not a folder.
        ValueError: ``root`` has no images, or an invalid ``image_size``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int | Sequence[int] = 1024,
        recursive: bool = True,
    ) -> None:
        sizes = [image_size] if isinstance(image_size, int) else list(image_size)
        if not sizes:
            raise ValueError("image_size must be an int or a non-empty list of ints.")
        self.sizes = [_check_size(s) for s in sizes]
        self.image_size = max(self.sizes)
        self.root = Path(root)
        try:
            self.paths: list[Path] = list_images(self.root, recursive=recursive)
        except ValueError as err:
            raise ValueError(f"ImageFolderDataset: {err}") from None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            array = load_image(path)
        except (OSError, ValueError) as err:
            raise ValueError(f"ImageFolderDataset: could not read image '{path}': {err}") from err
        image = torch.tensor(array).permute(2, 0, 1).float().div_(255.0)
        orig = (int(image.shape[1]), int(image.shape[2]))
        image, valid, scale = resize_pad_square(image, self.image_size)
        return {
            "image": image,
            "valid_size": torch.tensor(valid, dtype=torch.long),
            "scale": scale,
            "orig_size": torch.tensor(orig, dtype=torch.long),
            "index": int(index),
            "path": str(path),
        }

    def __repr__(self) -> str:
        return f"ImageFolderDataset(root='{self.root}', images={len(self)}, sizes={self.sizes})"


def collate_images(batch: Sequence[Mapping[str, Any]], size: int | None = None) -> dict[str, Any]:
    """Stack samples of :class:`ImageFolderDataset`, optionally rescaled to ``size``.

    Args:
        batch: Samples (all of the same square size ``S``).
        size: Output side; None keeps ``S``. Rescaling the padded square keeps content and
            padding aligned (``valid_size`` and ``scale`` are updated).

    Returns:
        ``image`` ``[B, 3, s, s]``, ``valid_size`` ``[B, 2]`` long, ``scale`` ``[B]`` float,
        ``orig_size`` ``[B, 2]`` long, ``index`` ``[B]`` long and ``path`` (list of str).

    Raises:
        ValueError: For an empty batch or samples of different sizes.
    """
    if not batch:
        raise ValueError("collate_images got an empty batch.")
    shapes = {tuple(s["image"].shape) for s in batch}
    if len(shapes) != 1:
        raise ValueError(f"collate_images needs images of one size, got {sorted(shapes)}.")
    images = torch.stack([s["image"] for s in batch])
    valid = torch.stack([torch.as_tensor(s["valid_size"], dtype=torch.long) for s in batch])
    scale = torch.tensor([float(s["scale"]) for s in batch], dtype=torch.float32)
    src = images.shape[-1]
    if size is not None and _check_size(size, "size") != src:
        factor = size / src
        images = F.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        ).clamp_(0.0, 1.0)
        valid = (valid.float() * factor).round().clamp_(min=1, max=size).long()
        scale = scale * factor
    return {
        "image": images,
        "valid_size": valid,
        "scale": scale,
        "orig_size": torch.stack([torch.as_tensor(s["orig_size"]) for s in batch]),
        "index": torch.tensor([int(s["index"]) for s in batch], dtype=torch.long),
        "path": [str(s["path"]) for s in batch],
    }


class MultiScaleCollate:
    """Collate function choosing one image size per batch from ``sizes``.

    The choice is a function of ``seed`` and the batch's sample indices only (not of the global
    RNG or the worker), so it is the same in every worker set-up and after a resume.

    Args:
        sizes: Candidate square sizes (load the dataset at ``max(sizes)``).
        seed: Offsets the choice.
    """

    def __init__(self, sizes: Sequence[int], seed: int = 0) -> None:
        self.sizes = [_check_size(s, "sizes") for s in sizes]
        if not self.sizes:
            raise ValueError("MultiScaleCollate needs at least one size.")
        self.seed = int(seed)

    def pick(self, indices: Sequence[int]) -> int:
        """The size for a batch of these sample indices."""
        key = self.seed
        for i in indices:
            key = (key * 1_000_003 + int(i) + 1) % (2**61 - 1)
        g = torch.Generator().manual_seed(key)
        return self.sizes[int(torch.randint(len(self.sizes), (1,), generator=g))]

    def __call__(self, batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate ``batch`` at the size :meth:`pick` gives (see :func:`collate_images`)."""
        return collate_images(batch, size=self.pick([int(s["index"]) for s in batch]))

    def __repr__(self) -> str:
        return f"MultiScaleCollate(sizes={self.sizes}, seed={self.seed})"
