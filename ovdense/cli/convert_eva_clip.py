"""Convert an EVA-CLIP / CLIPSelf EVA02 checkpoint into an open_clip checkpoint.

Example::

    ovdense convert-eva-clip eva_vit_b16_coco_patches.pt clipself_eva02_b16.pt \\
        --model EVA02-B-16
    # a visual-only file: take the text tower (and logit_scale) from a full checkpoint
    ovdense convert-eva-clip visual_only.pt out.pt --model EVA02-B-16 \\
        --text-from EVA02_CLIP_B_psz16_s8B.pt

(``python tools/convert_eva_clip.py ...`` runs the same code.)

The output is a plain ``name -> tensor`` dict (``torch.save``; ``.safetensors`` suffix:
safetensors) that ``load_clip("EVA02-B-16", checkpoint=OUT)`` and
``open_clip.create_model("EVA02-B-16", pretrained=OUT)`` read with ``weights_only=True``.
Every key is checked against a freshly built (random, nothing downloaded) ``--model``. Without
an output path the file is only checked.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import open_clip
import torch

from ..modeling.clip.eva_convert import (
    checkpoint_layout,
    load_eva_clip_weights,
    read_checkpoint,
)
from ..utils.cli import run_cli
from ..utils.io import atomic_write


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", help="EVA-CLIP / CLIPSelf checkpoint (full or image tower only)")
    p.add_argument("output", nargs="?", default=None, help="where to write the open_clip file")
    p.add_argument(
        "--model", default="EVA02-B-16", help="open_clip architecture (default %(default)s)"
    )
    p.add_argument(
        "--text-from",
        default=None,
        help="a full EVA-CLIP or open_clip checkpoint providing the text tower and logit_scale "
        "(needed when CHECKPOINT holds only the image tower)",
    )
    return p.parse_args(argv)


def convert(
    checkpoint: str,
    output: str | None = None,
    model: str = "EVA02-B-16",
    text_from: str | None = None,
) -> dict[str, torch.Tensor]:
    """Read, convert, validate (strict load into ``model``) and optionally save (atomically:
    an existing ``output`` is replaced only by a complete file).

    Returns:
        The open_clip state dict.

    Raises:
        KeyError: unknown ``model``.
        ValueError: a visual-only checkpoint without ``text_from``, or keys / shapes that do
            not fit ``model``.
    """
    if model not in open_clip.list_models():
        raise KeyError(f"Unknown open_clip model '{model}' (e.g. EVA02-B-16, EVA02-L-14-336).")
    clip = open_clip.create_model(model, pretrained=None)
    sd = read_checkpoint(checkpoint)
    visual_only = checkpoint_layout(sd).endswith("_visual")
    if visual_only and text_from is None:
        raise ValueError(
            f"{checkpoint} holds only an image tower; pass --text-from FULL_CHECKPOINT (e.g. the "
            f"original EVA02-CLIP or open_clip {model} weights) for the text tower."
        )
    if text_from is not None:
        if not visual_only:
            raise ValueError(f"{checkpoint} already has a text tower; drop --text-from.")
        full = read_checkpoint(text_from)
        if checkpoint_layout(full).endswith("_visual"):
            raise ValueError(f"--text-from {text_from} has no text tower either.")
        load_eva_clip_weights(clip, full)
    load_eva_clip_weights(clip, sd)
    out = {k: v.detach().to("cpu").contiguous() for k, v in clip.state_dict().items()}
    if output is not None:
        dest = Path(output)
        with atomic_write(dest, suffix=dest.suffix or ".tmp") as tmp:
            if dest.suffix == ".safetensors":
                from safetensors.torch import save_file

                save_file({k: v.clone() for k, v in out.items()}, str(tmp))
            else:
                torch.save(out, tmp)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Convert; user errors are raised (``run_cli`` shows them as one line)."""
    args = parse_args(argv)
    state = convert(args.checkpoint, args.output, args.model, args.text_from)
    n = sum(v.numel() for v in state.values())
    dest = f" -> {args.output}" if args.output else " (checked only)"
    print(f"{args.model}: {len(state)} tensors, {n / 1e6:.1f}M values{dest}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
