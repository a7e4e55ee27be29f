#!/usr/bin/env python
"""Open-vocabulary segmentation of images and folders with any list of words.

Example::

    python demo/demo.py --config naclip --input photos/ --classes "cat,dog,sofa|couch" \
        --output out/ --checkpoint ~/weights/ViT-B-16-openai.bin

For each image it writes ``<name>_labels.png`` (pixel value = class index, palette PNG),
``<name>_overlay.jpg`` (colours blended on the image with a legend of the classes present) and
``<name>.json`` (the classes and the fraction of the image each one covers). Classes are separated
by ``,``, synonyms of one class by ``|``. With ``--background`` (or ``--prob-thd``) a background
class is put first and low-confidence pixels go to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ovdense import Predictor, Vocabulary, build_segmentor
from ovdense.utils.cli import USER_ERRORS, report_user_error
from ovdense.utils.image import list_images
from ovdense.utils.visualizer import overlay, save_label_png


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--config",
        default="naclip",
        help="preset (maskclip, sclip, clearclip, naclip, seg/<name>) or a config file",
    )
    p.add_argument("--input", required=True, help="an image file or a folder of images")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--classes", help='e.g. "cat,dog,sofa|couch" (| separates synonyms)')
    g.add_argument("--classes-file", help="one class per line, synonyms separated by ', '")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument(
        "--background",
        default=None,
        help='background names put first as class 0, e.g. "background|sky|wall"',
    )
    p.add_argument(
        "--prob-thd",
        type=float,
        default=None,
        help="pixels whose best class probability is below this become background",
    )
    p.add_argument("--model", default=None, help="open_clip architecture, e.g. ViT-B-16")
    p.add_argument("--pretrained", default=None, help="open_clip weight tag, e.g. openai")
    p.add_argument("--checkpoint", default=None, help="local open_clip checkpoint (offline use)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("--recursive", action="store_true", help="also read images in sub-folders")
    p.add_argument("opts", nargs="*", default=[], help="config overrides: model.key=value ...")
    return p.parse_intermixed_args(argv)  # key=value overrides anywhere


def build_vocabulary(args: argparse.Namespace) -> Vocabulary:
    if args.classes_file:
        classes = [list(c) for c in Vocabulary.from_file(args.classes_file)]
    else:
        classes = [list(c) for c in Vocabulary.parse(args.classes)]
    if args.background is not None or args.prob_thd is not None:
        bg = (args.background or "background").split("|")
        classes = [bg, *classes]
    return Vocabulary(classes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        vocab = build_vocabulary(args)
    except (ValueError, FileNotFoundError) as err:
        return report_user_error(err)
    src = Path(args.input)
    if not src.exists():
        print(f"error: input not found: {src}", file=sys.stderr)
        return 2
    try:
        images = list_images(src, recursive=args.recursive) if src.is_dir() else [src]
    except ValueError as err:
        return report_user_error(err)
    try:
        seg = build_segmentor(
            args.config,
            model=args.model,
            pretrained=args.pretrained,
            checkpoint=args.checkpoint,
            overrides=args.opts,
            device=args.device,
        )
    except USER_ERRORS as err:
        return report_user_error(err)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(seg)
    skipped: list[str] = []
    for path in tqdm(images, desc="Segmenting", unit="image", disable=len(images) < 2):
        try:
            predictor.set_image(path)
        except (ValueError, OSError) as err:
            tqdm.write(f"skipped {path}: {err}")
            skipped.append(str(path))
            continue
        pred = predictor.predict(vocab, prob_thd=args.prob_thd, return_probs=False)
        stem = path.stem if src.is_file() else "_".join(path.relative_to(src).with_suffix("").parts)
        save_label_png(pred.labels, out_dir / f"{stem}_labels.png")
        vis = overlay(predictor.image, pred.labels, pred.classes, alpha=args.alpha)
        Image.fromarray(vis).save(out_dir / f"{stem}_overlay.jpg", quality=92)
        area = np.bincount(pred.labels.ravel(), minlength=len(pred.classes)) / pred.labels.size
        summary = {
            "image": str(path),
            "classes": pred.classes,
            "present": {pred.classes[i]: round(float(area[i]), 5) for i in pred.present_classes()},
        }
        (out_dir / f"{stem}.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    done = len(images) - len(skipped)
    print(f"Wrote {done} result(s) to {out_dir}" + (f"; skipped {len(skipped)}" if skipped else ""))
    return 0 if done or not images else 1


if __name__ == "__main__":
    sys.exit(main())
