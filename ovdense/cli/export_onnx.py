"""``ovdense export-onnx``: a segmentor with its vocabulary baked in, or the dense backbone alone
with the vocabulary as an input, as one ONNX file (see :mod:`ovdense.modeling.onnx_export`).

Example::

    ovdense export-onnx --config naclip --checkpoint ViT-B-16.bin \\
        --classes "background,cat,dog" --image-size 448 448 --output naclip_voc.onnx --verify
    ovdense export-onnx --config sclip --backbone-only --image-size 224 224 --output sclip.onnx
    # (the backbone file takes any image size: see DYNAMIC_SIZE_STRATEGIES)

(needs ``pip install "ovdense[onnx]"``; ``--verify`` runs the file with ONNX Runtime and compares
it with eager PyTorch on a random image.)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch

from ..utils.cli import add_model_source_arguments, model_source, run_cli


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--config", default="naclip", help="method preset (default: naclip)")
    add_model_source_arguments(p)
    p.add_argument("--classes", default=None, help='comma-separated vocabulary, "cat,dog"')
    p.add_argument(
        "--backbone-only",
        action="store_true",
        help="export the dense backbone and head: (images, text_embeds) -> scores",
    )
    p.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        required=True,
        metavar=("H", "W"),
        help="the example traced; the only size the file takes unless its size is dynamic",
    )
    p.add_argument(
        "--fixed-size",
        action="store_true",
        help="export for --image-size only even where a dynamic size is possible (the backbone "
        "of vanilla/maskclip/sclip/clearclip/naclip/catseg; a segmentor without resize and "
        "windows)",
    )
    p.add_argument("--batch", type=int, default=1, help="images per call (fixed-vocabulary model)")
    p.add_argument("--prob-thd", type=float, default=None, help="background threshold baked in")
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument("--verify", action="store_true", help="compare with eager on a random input")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides model.key=value")
    args = p.parse_args(argv)
    if not args.backbone_only and not args.classes:
        p.error("give --classes (the vocabulary baked in) or --backbone-only")

    from ..model_zoo import build_segmentor
    from ..modeling.onnx_export import (
        DYNAMIC_SIZE_STRATEGIES,
        dynamic_size_supported,
        export_backbone_onnx,
        export_segmentor_onnx,
        run_onnx,
    )
    from ..modeling.text import Vocabulary

    seg = build_segmentor(args.config, overrides=args.opts, device="cpu", **model_source(args))
    size = (args.image_size[0], args.image_size[1])
    start = time.perf_counter()
    dynamic = False if args.fixed_size else None
    if args.backbone_only:
        path, bb = export_backbone_onnx(seg, size, args.output, dynamic_size=dynamic)
        name = getattr(getattr(seg.backbone, "strategy", None), "name", None)
        is_dynamic = not args.fixed_size and name in DYNAMIC_SIZE_STRATEGIES
    else:
        vocab = Vocabulary.coerce([c.strip() for c in args.classes.split(",") if c.strip()])
        path, model = export_segmentor_onnx(
            seg, vocab, size, args.output, args.batch, args.prob_thd, dynamic_size=dynamic
        )
        is_dynamic = not args.fixed_size and dynamic_size_supported(seg)
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.0f} s;"
        f" image size: {'dynamic' if is_dynamic else f'{size[0]}x{size[1]} only'}"
    )
    if args.verify:
        with torch.no_grad():
            if args.backbone_only:
                images = torch.randn(1, 3, *size)
                embeds = seg.encode_text(["cat", "dog"]).embeds
                out, _ = run_onnx(path, {"images": images, "text_embeds": embeds})
                diff = abs(out["scores"] - bb(images, embeds).numpy()).max()
                print(f"ONNX Runtime vs eager: max |scores diff| = {diff:.2e}")
            else:
                images = model.example_input(args.batch)
                out, _ = run_onnx(path, {"images": images})
                logits, labels = model(images)
                diff = abs(out["logits"] - logits.numpy()).max()
                same = float((out["labels"] == labels.numpy()).mean())
                print(
                    f"ONNX Runtime vs eager: max |logits diff| = {diff:.2e}, "
                    f"labels equal on {100 * same:.2f}% of pixels"
                )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
