"""Convert / validate CLIP-DINOiser's released ``last.pt`` into an ovdense head state dict.

Example::

    ovdense convert-clip-dinoiser checkpoints/last.pt clip_dinoiser_head.pth

(``python tools/convert_clip_dinoiser.py ...`` runs the same code.)

The output holds ``obj_proj.weight``, ``obj_proj.bias``, ``bkg_decoder.weight`` and
``bkg_decoder.bias`` (saved with ``torch.save``); ``model.head_checkpoint`` accepts it as well as
the original file. Without an output path the file is only checked.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..modeling.refiners.clip_dinoiser import CLIPDINOiserHead, read_clip_dinoiser_state_dict
from ..utils.cli import run_cli
from ..utils.io import atomic_write


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", help="the official last.pt (or a bare head state dict)")
    p.add_argument("output", nargs="?", default=None, help="where to save the head state dict")
    return p.parse_args(argv)


def convert(checkpoint: str, output: str | None = None) -> dict[str, torch.Tensor]:
    """Read, validate (shapes against a head of the checkpoint's width) and optionally save
    (atomically: an existing ``output`` is replaced only by a complete file)."""
    state = read_clip_dinoiser_state_dict(checkpoint)
    weight = state["obj_proj.weight"]
    if weight.ndim != 4:
        raise ValueError(f"{checkpoint}: obj_proj.weight must be 4-D, got {tuple(weight.shape)}.")
    proj_dim, width = int(weight.shape[0]), int(weight.shape[1])
    head = CLIPDINOiserHead(width, proj_dim=proj_dim).load_official(checkpoint)
    out = {k: v.detach().clone() for k, v in head.state_dict().items()}
    if output is not None:
        dest = Path(output)
        with atomic_write(dest, suffix=dest.suffix or ".tmp") as tmp:
            torch.save(out, tmp)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Convert; user errors are raised (``run_cli`` shows them as one line)."""
    args = parse_args(argv)
    state = convert(args.checkpoint, args.output)
    for k, v in state.items():
        print(f"{k:20s} {tuple(v.shape)}")
    width = state["obj_proj.weight"].shape[1]
    print(f"ViT width {width}" + (f" -> {args.output}" if args.output else " (checked only)"))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
