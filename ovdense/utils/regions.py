"""Class-agnostic masks as one region label map (the form CorrCLIP's code consumes).

A *region map* is an ``[H, W]`` integer map: ``0`` where no mask covers the pixel (the
"unsegmented" region), ``1 .. N`` the masks. Lives on the ground floor so that the models (which
read region maps) and :mod:`ovdense.sam` (which makes masks) can both use it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["REGION_KEY", "REGION_ORDERS", "masks_to_region_map", "read_region_map"]

#: The array name of a region-map file (CorrCLIP's ``data/region_masks/*/<stem>.npz``).
REGION_KEY = "instance_mask"

#: How overlapping masks are painted: see :func:`masks_to_region_map`.
REGION_ORDERS = ("area_ascending", "given")


def masks_to_region_map(masks: Tensor | np.ndarray, order: str = "area_ascending") -> Tensor:
    """Paint class-agnostic masks into one region label map.

    Args:
        masks: ``[N, H, W]`` bool (or 0/1) masks.
        order: ``"area_ascending"``: masks sorted by area, smallest first (stable: equal areas
            keep their given order), painted with ids ``1 .. N`` in that order, each over the
            earlier ones, so where masks overlap the *larger* one wins (CorrCLIP's SAM2 code);
            ``"given"``: painted in the given order, id ``i + 1`` for mask ``i``.

    Returns:
        ``[H, W]`` int32: ``0`` where no mask is, else the id of the mask painted last there.
        With ``N = 0`` all zeros. Ids of masks fully covered by later ones do not appear.
    """
    if order not in REGION_ORDERS:
        raise ValueError(f"order must be one of {REGION_ORDERS}, got {order!r}.")
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, Tensor) else masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got {tuple(m.shape)}.")
    m = m.bool()
    n, h, w = m.shape
    out = torch.zeros(h, w, dtype=torch.int32, device=m.device)
    if n == 0:
        return out
    if order == "area_ascending":
        areas = m.flatten(1).sum(dim=1)
        ranks = torch.sort(areas, stable=True).indices
    else:
        ranks = torch.arange(n, device=m.device)
    for new_id, k in enumerate(ranks.tolist(), start=1):
        out[m[k]] = new_id
    return out


def read_region_map(
    region_dir: str | os.PathLike,
    image_path: str | os.PathLike,
    size: tuple[int, int],
    key: str = REGION_KEY,
) -> Tensor:
    """The region map of an image generated beforehand: ``region_dir/<image stem>.npz``,
    array ``key`` (CorrCLIP's layout: the masks painted into one integer map at the image's
    size, the smallest value where no mask lies).

    Args:
        region_dir: the folder of ``.npz`` files.
        image_path: the image's file (only its stem is used).
        size: ``(H, W)`` of the image; the map must have it.
        key: the array holding the map.

    Returns:
        ``[H, W]`` int64 CPU tensor.

    Raises:
        FileNotFoundError: no file for this image; KeyError: no ``key`` array in it;
        ValueError: not an integer map of ``size``.
    """
    path = Path(region_dir).expanduser() / f"{Path(image_path).stem}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"No region map for {Path(image_path).name}: expected {path} (generate the masks of "
            "every image first, or use the preset's mask source)."
        )
    with np.load(path, allow_pickle=False) as f:
        if key not in f:
            raise KeyError(
                f"{path} has no array {key!r} (it holds {sorted(f.files)}): set the key."
            )
        array = f[key]
    if array.ndim != 2 or tuple(array.shape) != tuple(size) or array.dtype.kind not in "iub":
        raise ValueError(
            f"{path}: expected an integer {size[0]}x{size[1]} map (the image's size), got "
            f"{array.dtype} {tuple(array.shape)}."
        )
    return torch.from_numpy(array.astype(np.int64))
