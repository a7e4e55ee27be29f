"""Open-vocabulary segmentation of images and folders with any list of words.

Example::

    ovdense demo --config naclip --input photos/ --classes "cat,dog,sofa|couch" \
        --output out/ --checkpoint ~/weights/ViT-B-16-openai.bin

(``python -m ovdense demo ...`` and ``python demo/demo.py ...`` run the same code.)

For each image it writes ``<name>_labels.png`` (pixel value = class index, palette PNG),
``<name>_overlay.jpg`` (colours blended on the image with a legend of the classes present) and
``<name>.json`` (the classes and the fraction of the image each one covers). Classes are separated
by ``,``, synonyms of one class by ``|``. With ``--background`` (or ``--prob-thd``) a background
class is put first and low-confidence pixels go to it.

Output names: ``<name>`` is the file name without its extension (in a ``--recursive`` run, the
path relative to ``--input`` joined with ``_``: ``sub/a.jpg`` -> ``sub_a``). When two inputs
would get the same name (``a.png`` and ``a.jpg``), both keep their extension: ``a_png_labels.png``,
``a_jpg_labels.png``; a number is added in the rare case that still clashes (names are compared
ignoring case). Every file is written atomically (a hidden temporary file renamed into place).

The output folder may not be the input folder, nor inside it in a ``--recursive`` run: a second
run would read the results as input images. A folder run goes on past images that cannot be
read, are larger than the pixel limit or fail to segment; the summary counts them, and the exit
code is 0 when at least one image was segmented.

Images larger than ``--max-image-pixels`` (default: ``OVDENSE_MAX_IMAGE_PIXELS`` if set, else
Pillow's 89,478,485 pixels, about 9500 x 9500) are refused from their header, before any pixel is
decoded (a small "decompression bomb" file can claim gigabytes of pixels); 0 means no limit.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..model_zoo import build_segmentor
from ..modeling.text import Vocabulary
from ..predictor import Prediction, Predictor
from ..utils import image as image_mod
from ..utils.cli import (
    UserError,
    add_device_argument,
    add_model_source_arguments,
    add_output_argument,
    add_overrides_argument,
    model_source,
    resolve_device,
    run_cli,
)
from ..utils.image import ImageTooLargeError, list_images, load_image
from ..utils.io import atomic_write, atomic_write_text
from ..utils.labels import save_label_png
from ..utils.visualizer import overlay


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (``error: ...``, exit 2 through ``run_cli``), no usage block."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see --help)")


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return value


def _pixel_limit(text: str) -> int:
    try:
        return image_mod.parse_max_image_pixels(text) or 0
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of pixels >= 0 (0 or 'none': no limit), got {text}"
        ) from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config",
        default="naclip",
        help="preset (maskclip, sclip, clearclip, naclip, seg/<name>) or a config file",
    )
    p.add_argument("--input", required=True, help="an image file or a folder of images")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--classes", help='e.g. "cat,dog,sofa|couch" (| separates synonyms)')
    g.add_argument("--classes-file", help="one class per line, synonyms separated by '|' or ','")
    add_output_argument(p, "output folder (not the input folder)", required=True)
    p.add_argument(
        "--background",
        default=None,
        help='background names put first as class 0, e.g. "background|sky|wall"',
    )
    p.add_argument(
        "--prob-thd",
        type=_unit_interval,
        default=None,
        help="in [0, 1]: pixels whose best class probability is below this become background",
    )
    add_model_source_arguments(p)
    add_device_argument(p)
    p.add_argument("--alpha", type=_unit_interval, default=0.5, help="overlay opacity in [0, 1]")
    p.add_argument(
        "--max-image-pixels",
        type=_pixel_limit,
        default=None,
        metavar="N",
        help="refuse images with more than N pixels, read from the file header before decoding "
        "(0: no limit; default: $OVDENSE_MAX_IMAGE_PIXELS, else 89478485 as Pillow)",
    )
    p.add_argument("--recursive", action="store_true", help="also read images in sub-folders")
    add_overrides_argument(p)
    return p.parse_intermixed_args(argv)  # key=value overrides anywhere


def has_background(args: argparse.Namespace) -> bool:
    """Whether the demo puts a background class first (``--background`` or ``--prob-thd``)."""
    return args.background is not None or args.prob_thd is not None


def build_vocabulary(args: argparse.Namespace) -> Vocabulary:
    if args.classes_file:
        classes = [list(c) for c in Vocabulary.from_file(args.classes_file)]  # names the file
    else:
        classes = [list(c) for c in Vocabulary.parse(args.classes)]
    if has_background(args):
        bg = (args.background or "background").split("|")
        classes = [bg, *classes]
    return Vocabulary(classes)


def output_stems(images: list[Path], root: Path | None) -> list[str]:
    """The ``<name>`` of each image's outputs, unique ignoring case (see the module docstring).

    Args:
        images: The input images, in processing order.
        root: The input folder (names are paths relative to it), ``None`` for a single file.
    """
    rels = [Path(p.name) if root is None else p.relative_to(root) for p in images]
    base = ["_".join(r.with_suffix("").parts) for r in rels]
    clashes = Counter(b.casefold() for b in base)
    stems: list[str] = []
    used: set[str] = set()
    for rel, name in zip(rels, base):
        if clashes[name.casefold()] > 1 and rel.suffix:
            name = f"{name}_{rel.suffix.lstrip('.')}"
        stem, n = name, 2
        while stem.casefold() in used:
            stem, n = f"{name}_{n}", n + 1
        used.add(stem.casefold())
        stems.append(stem)
    return stems


def check_output_folder(out_dir: Path, src: Path, recursive: bool) -> None:
    """Refuse an output that is a file, the input folder (or inside it, recursively) or not
    writable, before the model is loaded."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--output '{out_dir}' is a file, not a folder; give a folder.")
    if src.is_dir():
        inp, out = src.resolve(), out_dir.resolve()
        if out == inp:
            raise ValueError(
                f"--output '{out_dir}' is the input folder: the next run would segment the "
                "results as images; give another folder."
            )
        if recursive and inp in out.parents:
            raise ValueError(
                f"--output '{out_dir}' is inside the input folder '{src}' read with --recursive: "
                "the next run would segment the results as images; give a folder outside it."
            )
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(existing))


def write_outputs(
    out_dir: Path, stem: str, path: Path, image: np.ndarray, pred: Prediction, alpha: float
) -> None:
    """The label PNG, the overlay JPEG and the JSON summary, each written atomically."""
    with atomic_write(out_dir / f"{stem}_labels.png", suffix=".png") as tmp:
        save_label_png(pred.labels, tmp)
    vis = overlay(image, pred.labels, pred.classes, alpha=alpha)
    with atomic_write(out_dir / f"{stem}_overlay.jpg", suffix=".jpg") as tmp:
        Image.fromarray(vis).save(tmp, format="JPEG", quality=92)
    del vis
    counts = np.bincount(pred.labels.ravel(), minlength=len(pred.classes))
    area = counts / pred.labels.size
    summary = {
        "image": str(path),
        "classes": pred.classes,
        "present": {pred.classes[i]: round(float(area[i]), 5) for i in pred.present_classes()},
    }
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(summary, indent=2, ensure_ascii=False))


def _summary(done: int, out_dir: Path, skipped: dict[str, list[Path]]) -> str:
    text = f"Wrote {done} result(s) to {out_dir}"
    if not skipped:
        return text
    parts = []
    for reason, paths in skipped.items():
        names = ", ".join(p.name for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
        parts.append(f"{len(paths)} {reason} ({names})")
    return f"{text}; skipped {sum(map(len, skipped.values()))}: " + ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    vocab = build_vocabulary(args)
    src = Path(args.input)
    if not src.exists():
        raise FileNotFoundError(f"input not found: '{src}'")
    folder_run = src.is_dir()
    images = list_images(src, recursive=args.recursive) if folder_run else [src]
    out_dir = Path(args.output)
    check_output_folder(out_dir, src, args.recursive)
    limit = image_mod.MAX_IMAGE_PIXELS if args.max_image_pixels is None else args.max_image_pixels
    device = resolve_device(args.device)
    seg = build_segmentor(
        args.config,
        **model_source(args),
        overrides=args.opts,
        device=device,
        # the --background class is class 0 whatever its names (e.g. "sky|wall")
        **({"background_index": 0} if has_background(args) else {}),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = output_stems(images, src if folder_run else None)
    predictor = Predictor(seg)
    skipped: dict[str, list[Path]] = {}
    bar = tqdm(images, desc="Segmenting", unit="image", disable=len(images) < 2)
    for path, stem in zip(bar, stems):
        stage = "unreadable"
        try:
            image = load_image(path, max_pixels=limit)
            stage = "failed to segment"
            predictor.set_image(image)
            pred = predictor.predict(vocab, prob_thd=args.prob_thd, return_probs=False)
        except (ValueError, OSError) as err:
            if not folder_run or (stage != "unreadable" and isinstance(err, OSError)):
                raise
            reason = "too large" if isinstance(err, ImageTooLargeError) else stage
            tqdm.write(f"skipped {path}: {err}")
            skipped.setdefault(reason, []).append(path)
            predictor.reset_image()
            continue
        write_outputs(out_dir, stem, path, image, pred, args.alpha)
        del image, pred
        predictor.reset_image()
    done = len(images) - sum(map(len, skipped.values()))
    print(_summary(done, out_dir, skipped))
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
