"""Position-embedding interpolation for ViTs at any patch grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

POS_INTERP_MODES = ("size", "scale_factor")


def interpolate_pos_embed(
    pos_embed: Tensor,
    src_grid: tuple[int, int],
    dst_grid: tuple[int, int],
    mode: str = "size",
    num_prefix_tokens: int = 1,
) -> Tensor:
    """Resize a ViT position embedding to another patch grid (bicubic, prefix tokens kept).

    Args:
        pos_embed: ``[P + gh0 * gw0, C]`` with ``P = num_prefix_tokens`` (the CLS position first).
        src_grid: ``(gh0, gw0)``, the grid the embedding was trained for.
        dst_grid: ``(gh, gw)``, the grid wanted.
        mode: ``"size"`` interpolates to the target size (CLIP-DINOiser / MaskCLIP);
            ``"scale_factor"`` reproduces SCLIP / NACLIP / ClearCLIP, which call interpolate with
            ``scale_factor = (g + 0.1) / g0`` — the values differ slightly at non-native grids.

    Returns:
        ``[P + gh * gw, C]``. At the native grid the input is returned unchanged (both modes).
    """
    if mode not in POS_INTERP_MODES:
        raise ValueError(f"pos_interp must be one of {POS_INTERP_MODES}, got {mode!r}.")
    if tuple(dst_grid) == tuple(src_grid):
        return pos_embed
    prefix, grid = pos_embed[:num_prefix_tokens], pos_embed[num_prefix_tokens:]
    gh0, gw0 = src_grid
    if grid.shape[0] != gh0 * gw0:
        raise ValueError(f"pos_embed has {grid.shape[0]} grid tokens, expected {gh0}x{gw0}.")
    dim = grid.shape[-1]
    orig_dtype = grid.dtype
    grid = grid.float().reshape(1, gh0, gw0, dim).permute(0, 3, 1, 2)
    gh, gw = dst_grid
    if mode == "size":
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
    else:
        scale = ((gh + 0.1) / gh0, (gw + 0.1) / gw0)
        grid = F.interpolate(
            grid,
            scale_factor=scale,
            mode="bicubic",
            align_corners=False,
            recompute_scale_factor=False,
        )
        if grid.shape[-2:] != (gh, gw):  # floor((g + 0.1)) == g always; guard anyway
            raise RuntimeError(f"scale_factor interpolation gave {tuple(grid.shape[-2:])}")
    grid = grid.permute(0, 2, 3, 1).reshape(gh * gw, dim).to(orig_dtype)
    return torch.cat([prefix, grid], dim=0)
