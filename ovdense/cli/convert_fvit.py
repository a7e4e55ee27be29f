"""Check one of F-ViT's released detectors (CLIPSelf, MMDetection 2.x ``.pth``) against
ovdense's detector.

Example::

    ovdense convert-fvit fvit_eva_vitb16_ovcoco_clipself_proposals.pth

The file is read with ``weights_only=True``, its model (ViT-B/16 or ViT-L/14, OV-COCO or
OV-LVIS) is recognised from its tensors (``--preset`` names it and checks), every tensor is
loaded strictly into ovdense's detector (:mod:`ovdense.modeling.convert.fvit`) and the test
settings used are printed. No converted copy is needed: ``load_fvit(FILE)`` and
``ovdense eval-det --fvit FILE ...`` read the released file directly.
(``python tools/convert_fvit.py ...`` runs the same.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..modeling.convert.fvit import FVIT_PRESETS, load_fvit
from ..utils.cli import run_cli


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", help="F-ViT's released .pth (MMDetection format)")
    p.add_argument("--preset", default=None, choices=sorted(FVIT_PRESETS), help="expected model")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Check and optionally convert; format errors are one line (``run_cli``)."""
    args = parse_args(argv)
    ck = load_fvit(args.checkpoint, preset=args.preset)
    p = ck.preset
    state = {k: v for k, v in ck.detector.state_dict().items() if not k.startswith("text_")}
    print(
        f"F-ViT {p.name} ({p.size_name}, {ck.class_embeds.shape[0]} classes"
        f"{', mask head' if p.mask_head else ''}): {len(state)} tensors loaded; test settings "
        f"{p.image_size} px, ensemble T={p.clip_temperature:g} alpha={p.alpha:g} "
        f"beta={p.beta:g}, score>{p.score_thresh:g}, NMS {p.nms_thresh:g}, "
        f"{p.detections_per_img} per image"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
