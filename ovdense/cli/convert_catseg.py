"""Check / convert CAT-Seg's released ``model_final.pth`` (KU-CVLAB/CAT-Seg, detectron2) into
ovdense's CAT-Seg checkpoint.

Example::

    ovdense convert-catseg model_final_base.pth catseg_vitb16_official.pt

(``python tools/convert_catseg.py ...`` runs the same code.)

The presets load the official file directly (``model.checkpoint=model_final_base.pth``: the
format is detected); converting is for a file in ovdense's names (``head.*`` and every
``clip.*`` tensor in open_clip's names, what :class:`~ovdense.modeling.segmentors.CATSegModel`
saves), read with ``weights_only=True``. The key mapping is
:mod:`ovdense.modeling.convert.catseg`. Without an output path the file is only checked: its
architecture is printed (CLIP size, head sizes) and every tensor is mapped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..modeling.convert.catseg import (
    OFFICIAL_FORMAT,
    describe_official,
    from_official,
    is_official_catseg,
    read_catseg_file,
)
from ..utils.cli import run_cli
from ..utils.io import atomic_write
from ..utils.weights import CheckpointFormatError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", help="the official model_final.pth")
    p.add_argument("output", nargs="?", default=None, help="where to write ovdense's file")
    return p.parse_args(argv)


def convert(checkpoint: str, output: str | None = None) -> dict[str, torch.Tensor]:
    """Read, map to ovdense's names (checked) and optionally save (atomically)."""
    state = read_catseg_file(checkpoint)
    source = f"CAT-Seg checkpoint {checkpoint}"
    if not is_official_catseg(state):
        raise CheckpointFormatError(
            f"{source} is not in the official format: expected {OFFICIAL_FORMAT}; a file with "
            "head.* / clip.* keys is ovdense's already and loads as it is."
        )
    out = {k: v.detach().clone() for k, v in from_official(state, source).items()}
    if output is not None:
        dest = Path(output)
        with atomic_write(dest, suffix=dest.suffix or ".tmp") as tmp:
            torch.save(out, tmp)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Convert; user errors are raised (``run_cli`` shows them as one line)."""
    args = parse_args(argv)
    info = describe_official(read_catseg_file(args.checkpoint), args.checkpoint)
    state = convert(args.checkpoint, args.output)
    clip = sum(1 for k in state if k.startswith("clip."))
    print(f"CLIP {info.official_name} (open_clip {info.clip_model}): {clip} tensors")
    print(f"head {sum(1 for k in state if k.startswith('head.'))} tensors: {info.head_kwargs}")
    print(f"-> {args.output}" if args.output else "(checked only)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
