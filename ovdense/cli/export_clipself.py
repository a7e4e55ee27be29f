"""Export a CLIPSelf training checkpoint as an open_clip checkpoint for every segmentor.

Example::

    ovdense export-clipself --config ovdense/configs/train/clipself_vitb16.py \
        --checkpoint output/clipself/model_0044352.pt --output clipself_vitb16.pt
    ovdense demo --config naclip --checkpoint clipself_vitb16.pt --input img.jpg ...

``--checkpoint`` may also be a training output folder (its ``last_checkpoint`` is used).
(``python tools/export_clipself.py ...`` runs the same code.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..config import LazyConfig, instantiate
from ..engine import load_checkpoint, read_last_checkpoint
from ..utils.cli import add_output_argument, add_overrides_argument, run_cli


def main(argv: Sequence[str] | None = None) -> int:
    """Export; user errors are raised (``run_cli`` shows them as one line)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="the training config")
    p.add_argument("--checkpoint", required=True, help="model_*.pt or a training output folder")
    add_output_argument(p, "open_clip checkpoint to write (.pt)", required=True)
    add_overrides_argument(p, "config overrides: key=value ...")
    args = p.parse_intermixed_args(argv)  # key=value overrides anywhere
    path = Path(args.checkpoint)
    if path.is_dir():
        found = read_last_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"No last_checkpoint in {path}: pass a model_*.pt file.")
        path = found
    state = load_checkpoint(path)["model"]
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config), args.opts)
    model = instantiate(cfg.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # missing / unexpected keys, shape mismatches
        first = (str(err).strip().splitlines() or ["state dict mismatch"])[0]
        raise ValueError(
            f"{path} does not fit the model of {args.config} ({first}); pass the config the run "
            "was trained with (its config.yaml)."
        ) from err
    model.save_open_clip_checkpoint(args.output)  # atomic
    print(f"Wrote {args.output} (from {path}); use it with checkpoint={args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
