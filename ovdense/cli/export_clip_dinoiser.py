"""Export CLIP-DINOiser heads trained by ovdense to the released ``last.pt`` format.

Example::

    ovdense export-clip-dinoiser output/clip_dinoiser_vitb16 last.pt

(``python tools/export_clip_dinoiser.py ...`` runs the same code.)

The input is a run folder (its ``last_checkpoint`` is used) or one ``model_*.pt`` written by
``ovdense train --config ovdense/configs/train/clip_dinoiser_vitb16.py``. The output is
``{"epoch": ..., "model_state_dict": {obj_proj.weight, obj_proj.bias, bkg_decoder.weight,
bkg_decoder.bias}}``, loadable with ``model.head_checkpoint=last.pt`` in the ``clip_dinoiser``
preset (which also accepts the ``model_*.pt`` file directly) and by the official code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..engine.checkpoint import load_checkpoint, read_last_checkpoint
from ..modeling.refiners.clip_dinoiser import read_clip_dinoiser_state_dict
from ..utils.cli import run_cli
from ..utils.io import atomic_write


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", help="a training run folder or one of its model_*.pt files")
    p.add_argument("output", help="where to write last.pt")
    return p.parse_args(argv)


def export(checkpoint: str, output: str) -> dict[str, torch.Tensor]:
    """Read the trainer checkpoint's head and write it in the release format."""
    path = Path(checkpoint)
    if path.is_dir():
        found = read_last_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"{path} has no last_checkpoint; is it a training run folder?")
        path = found
    state = read_clip_dinoiser_state_dict(path)
    epoch = int(load_checkpoint(path).get("data", {}).get("epoch", 0))
    out = Path(output)
    with atomic_write(out, suffix=out.suffix or ".tmp") as tmp:
        torch.save({"epoch": epoch, "model_state_dict": state}, tmp)
    return state


def main(argv: Sequence[str] | None = None) -> int:
    """Export; user errors are raised (``run_cli`` shows them as one line)."""
    args = parse_args(argv)
    state = export(args.checkpoint, args.output)
    for k, v in state.items():
        print(f"{k:20s} {tuple(v.shape)}")
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
