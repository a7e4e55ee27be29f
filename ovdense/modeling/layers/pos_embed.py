"""Position-embedding interpolation for ViTs at any patch grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

POS_INTERP_MODES = ("size", "scale_factor")


def bicubic_matrix(
    dst: int | torch.SymInt,
    src: int,
    plus: float | Tensor = 0.0,
    device: torch.device | None = None,
) -> Tensor:
    """The ``[dst, src]`` matrix of PyTorch's 1-D bicubic resize (``align_corners=False``, Keys
    kernel with ``a = -0.75``, taps clamped at the borders): ``M @ v`` resizes ``v [src]`` to
    ``dst`` samples as ``F.interpolate(..., mode="bicubic")`` does with the scale factor
    ``(dst + plus) / src`` (``plus=0``: resize to the size ``dst``; ``plus=0.1``: SCLIP's
    ``scale_factor=(g + 0.1) / g0``). ``dst`` may be symbolic (``torch.export``), ``plus`` a
    0-d tensor. With ``plus=0`` and ``dst == src`` it is the identity.
    """
    d = torch.arange(dst, device=device, dtype=torch.float32)
    count = torch.ones_like(d).sum()  # dst as a tensor, traced symbolically
    real = (d + 0.5) * (src / (count + plus)) - 0.5
    first = torch.floor(real)
    t = (real - first).unsqueeze(1)  # [dst, 1]
    a = -0.75

    def near(x: Tensor) -> Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: Tensor) -> Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    weights = torch.cat([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=1)  # [dst, 4]
    taps = first.long().unsqueeze(1) + torch.arange(-1, 3, device=device)
    taps = taps.clamp(0, src - 1)  # [dst, 4]
    hit = taps.unsqueeze(-1) == torch.arange(src, device=device)  # [dst, 4, src]
    return (hit.to(weights.dtype) * weights.unsqueeze(-1)).sum(dim=1)


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
    symbolic = any(isinstance(g, torch.SymInt) for g in dst_grid)
    if not symbolic and tuple(dst_grid) == tuple(src_grid):
        return pos_embed
    prefix, grid = pos_embed[:num_prefix_tokens], pos_embed[num_prefix_tokens:]
    gh0, gw0 = src_grid
    if grid.shape[0] != gh0 * gw0:
        raise ValueError(f"pos_embed has {grid.shape[0]} grid tokens, expected {gh0}x{gw0}.")
    dim = grid.shape[-1]
    orig_dtype = grid.dtype
    grid = grid.float().reshape(1, gh0, gw0, dim).permute(0, 3, 1, 2)
    gh, gw = dst_grid
    if symbolic:
        # NOTE: torch.export with a dynamic image size: ONNX's Resize takes either output sizes
        # or constant scales, not SCLIP's size-dependent scale, so the same bicubic resize is
        # written as two matrix products (bicubic_matrix), equal to F.interpolate's.
        # at the native grid the embedding is returned unchanged (as eagerly): scale 1 there
        ones_h = torch.ones(gh, device=grid.device)
        ones_w = torch.ones(gw, device=grid.device)
        native = (ones_h.sum() == gh0) & (ones_w.sum() == gw0)
        plus = torch.where(native, 0.0, 0.0 if mode == "size" else 0.1)
        mh = bicubic_matrix(gh, gh0, plus, grid.device)  # [gh, gh0]
        mw = bicubic_matrix(gw, gw0, plus, grid.device)  # [gw, gw0]
        out = torch.einsum("hi,cij,wj->hwc", mh, grid[0], mw).reshape(gh * gw, dim)
        return torch.cat([prefix, out.to(orig_dtype)], dim=0)
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
