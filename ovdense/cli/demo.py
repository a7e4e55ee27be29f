"""Open-vocabulary segmentation of images and folders with any list of words.

Example::

    ovdense demo --config naclip --input photos/ --classes "cat,dog,sofa|couch" \
        --output out/ --checkpoint ~/weights/ViT-B-16-openai.bin

(``python -m ovdense demo ...`` and ``python demo/demo.py ...`` run the same code.)

For each image it writes ``<name>_labels.png`` (pixel value = class index, palette PNG),
``<name>_overlay.jpg`` (colours blended on the image with a legend of the classes present) and
``<name>.json`` (the classes and the fraction of the image each one covers). Classes are separated
by ``,``, synonyms of one class by ``|``. With ``--background`` (or ``--prob-thd``) a background
class is put first and low-confidence pixels go to it; with ``--prob-thd`` and a class of
``--classes`` already named ``background`` (or ``bg`` / ``backdrop``), that class is used.

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

Videos, image sequences and cameras::

    ovdense demo --input clip.mp4 --classes "person,car,road" --output out/ --smooth 0.6
    ovdense demo --input "frames/*.png" --classes "person,car" --output out/
    ovdense demo --webcam 0 --classes "person,cup" --output out/ --show   # or --input 0

* A video file (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ...; read with OpenCV) gives
  ``<name>_overlay.mp4`` (codec ``mp4v``; same frame count, frame rate and size as the input, the
  class colours blended on each frame, no legend) and ``<name>.json`` (classes, frames, fps, size,
  the fraction of each class over the whole video and the flicker: the fraction of pixels whose
  label changes between consecutive frames). ``--save-frames`` also writes each frame's label
  PNG, ``<name>_000000_labels.png``, ``<name>_000001_labels.png``, ...
* An image sequence, a glob (quoted, e.g. ``"frames/*.png"``, sorted by name) or ``--input``
  given several times, is segmented in order with the outputs of single images.
* A camera, ``--webcam N`` (or ``--input N`` when no file ``N`` exists), is read until Ctrl-C
  (or ``--max-frames``) and written as ``webcam<N>_overlay.mp4`` at the camera's frame rate
  (30 when it reports none). A camera that cannot be opened is an error.
* ``--smooth A`` (A in [0, 1)): exponential moving average of the class probabilities across
  frames, ``p_t = A * p_{t-1} + (1 - A) * probs_t``, then the usual argmax / ``--prob-thd``; it
  reduces flicker (larger A: steadier, slower to follow motion); it also applies to image
  sequences and folders (in name order). 0 (the default) gives each
  frame's own result exactly. Smoothing needs the frame-size probabilities of every class, so it
  costs memory with large vocabularies; it starts afresh when the frame size changes, and a
  segmentor's saliency rule (which acts on labels) is not applied to smoothed results.
* ``--show`` also displays each result in a window (``q`` stops a video or camera run); without
  a display (no ``DISPLAY`` on Linux) it is ignored with a warning.
* The class names are embedded once per run; a progress bar shows frames per second.
* A video that cannot be opened (damaged, or not a video) and an output that cannot be written
  are one-line errors (exit code 2).

Open-vocabulary instances with Segment Anything (``--sam-masks``)::

    ovdense demo --config naclip --input photos/ --classes "cat,dog,sofa|couch" --output out/ \
        --sam-masks --sam-kind vit_b --sam-checkpoint ~/weights/sam_vit_b_01ec64.pth

SAM's automatic masks (``SamAutomaticMaskGenerator``; its options as ``--sam-points-per-side``,
``--sam-pred-iou-thresh``, ``--sam-stability-thresh``, ``--sam-crop-layers``, ...) are labelled
by the preset's dense features (mask pooling, :class:`ovdense.sam.SamInstanceSegmenter`); masks
labelled background (``--background`` / ``--prob-thd``) are dropped, duplicates removed by mask
NMS (``--sam-nms-iou``, per class unless ``--sam-class-agnostic-nms``). For each image (and each
video frame) it writes ``<name>_overlay.jpg`` (class colours, instance outlines and
``name score`` labels) and ``<name>.json``: the classes, COCO categories (``id`` = class index
+ 1), each class's area and the instances in COCO's results format with RLE masks
(``pycocotools``). A video gives ``<name>_overlay.mp4``, ``<name>_<frame>.json`` per frame
(``<name>_000000.json``, ...) and the summary ``<name>.json``. No label PNG is written in this
mode; ``--smooth`` and ``--save-frames`` do not apply to it.

SAM refinement of the semantic map (``--sam-refine``, same ``--sam-kind`` /
``--sam-checkpoint``): SAM is prompted by the connected regions of each class in the preset's
map and its masks snap the labels to object boundaries (:class:`ovdense.sam.refine.SAMRefiner`,
Trident's rule; the preset's ``model.post_refiner`` slot). All other outputs are unchanged.
"""

from __future__ import annotations

import argparse
import errno
import glob
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..model_zoo import build_segmentor
from ..modeling.text import Vocabulary
from ..predictor import Prediction, Predictor
from ..sam import (
    Instances,
    MaskGeneratorOptions,
    SamInstanceSegmenter,
    build_sam,
    draw_instances,
    instances_document,
    missing_checkpoint_message,
    tiny_sam,
)
from ..sam.refine import attach_sam_refiner
from ..utils import image as image_mod
from ..utils.cli import (
    UserError,
    add_device_argument,
    add_model_source_arguments,
    add_output_argument,
    add_overrides_argument,
    add_sam_arguments,
    model_source,
    resolve_device,
    run_cli,
    unit_interval,
)
from ..utils.image import ImageTooLargeError, list_images, load_image
from ..utils.io import atomic_write, atomic_write_text
from ..utils.labels import save_label_png
from ..utils.visualizer import overlay
from ..video import (
    FlickerMeter,
    TemporalSmoother,
    capture_fps,
    capture_frame_count,
    is_video_path,
    open_capture,
    read_frames,
)
from ..vocabulary import is_background_class


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (``error: ...``, exit 2 through ``run_cli``), no usage block."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see --help)")


def _smooth_factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text}")
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
    argv = list(sys.argv[1:] if argv is None else argv)
    webcam = any(a == "--webcam" or a.startswith("--webcam=") for a in argv)
    p.add_argument(
        "--input",
        action="append",
        required=not webcam,  # "required: --input, --output" when neither is given
        default=None,
        help='an image, a folder of images, a video file, a quoted glob ("frames/*.png") or a '
        "camera index; may be given several times for an image sequence",
    )
    p.add_argument("--webcam", type=int, default=None, metavar="N", help="read camera N")
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
        type=unit_interval,
        default=None,
        help="in [0, 1]: pixels whose best class probability is below this become background",
    )
    add_model_source_arguments(p)
    add_device_argument(p)
    p.add_argument("--alpha", type=unit_interval, default=0.5, help="overlay opacity in [0, 1]")
    p.add_argument(
        "--max-image-pixels",
        type=_pixel_limit,
        default=None,
        metavar="N",
        help="refuse images with more than N pixels, read from the file header before decoding "
        "(0: no limit; default: $OVDENSE_MAX_IMAGE_PIXELS, else 89478485 as Pillow)",
    )
    p.add_argument("--recursive", action="store_true", help="also read images in sub-folders")
    p.add_argument(
        "--smooth",
        type=_smooth_factor,
        default=0.0,
        metavar="A",
        help="in [0, 1): exponential moving average of class probabilities across frames "
        "(0: each frame's own result)",
    )
    p.add_argument(
        "--save-frames", action="store_true", help="videos: also write each frame's label PNG"
    )
    p.add_argument("--show", action="store_true", help="display results (needs a display)")
    p.add_argument(
        "--max-frames", type=int, default=None, metavar="N", help="stop a video after N frames"
    )
    add_sam_arguments(p)
    add_overrides_argument(p)
    args = p.parse_intermixed_args(argv)  # key=value overrides anywhere
    if args.sam_masks:
        if args.smooth > 0:
            p.error("--smooth does not apply to --sam-masks (instances are per frame)")
        if args.save_frames:
            p.error("--save-frames does not apply to --sam-masks (each frame's JSON is written)")
        if args.sam_refine:
            p.error(
                "--sam-refine refines semantic maps; --sam-masks labels SAM's own masks: pick one"
            )
    elif (args.sam_checkpoint is not None or args.sam_tiny_random) and not args.sam_refine:
        p.error("SAM options need --sam-masks or --sam-refine")
    return args


def _user_classes(args: argparse.Namespace) -> list[list[str]]:
    if args.classes_file:
        return [list(c) for c in Vocabulary.from_file(args.classes_file)]  # names the file
    return [list(c) for c in Vocabulary.parse(args.classes)]


def adds_background(args: argparse.Namespace) -> bool:
    """Whether the demo puts a background class first: ``--background``, or ``--prob-thd``
    when the classes have no class named background (``background`` / ``bg`` / ``backdrop``;
    that class is then the one low-confidence pixels go to)."""
    if args.background is not None:
        return True
    if args.prob_thd is None:
        return False
    return not any(is_background_class(c) for c in _user_classes(args))


def build_vocabulary(args: argparse.Namespace) -> Vocabulary:
    classes = _user_classes(args)
    if adds_background(args):
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
        save_label_png(pred.labels, tmp, class_names=pred.classes)
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


def write_instance_outputs(
    out_dir: Path, stem: str, path: Path, image: np.ndarray, inst: Instances, alpha: float
) -> None:
    """The instance overlay JPEG and the JSON (COCO results with RLE masks), atomically."""
    vis = draw_instances(image, inst, alpha=alpha)
    with atomic_write(out_dir / f"{stem}_overlay.jpg", suffix=".jpg") as tmp:
        Image.fromarray(vis).save(tmp, format="JPEG", quality=92)
    del vis
    doc = instances_document(inst, image=str(path))
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(doc, indent=1, ensure_ascii=False))


def check_sam_source(args: argparse.Namespace) -> None:
    """With ``--sam-masks`` / ``--sam-refine``: a SAM checkpoint must be given and exist (one
    sentence otherwise),
    checked before any model loads."""
    if not (args.sam_masks or args.sam_refine) or args.sam_tiny_random:
        return
    flag = "--sam-checkpoint"
    if args.sam_checkpoint is None:
        raise UserError(missing_checkpoint_message(args.sam_kind, flag))
    if not Path(args.sam_checkpoint).is_file():
        message = missing_checkpoint_message(args.sam_kind, flag)
        raise UserError(f"{flag} '{args.sam_checkpoint}' is not a file; {message}")


def build_instance_segmenter(
    args: argparse.Namespace, predictor: Predictor
) -> SamInstanceSegmenter:
    """SAM (``--sam-kind`` / ``--sam-checkpoint``, or the hidden tiny random one) over the
    predictor's segmentor, with the ``--sam-*`` options."""
    check_sam_source(args)
    sam = tiny_sam() if args.sam_tiny_random else build_sam(args.sam_kind, args.sam_checkpoint)
    sam = sam.to(resolve_device(args.device))
    options = MaskGeneratorOptions(
        points_per_side=args.sam_points_per_side,
        points_per_batch=args.sam_points_per_batch,
        pred_iou_thresh=args.sam_pred_iou_thresh,
        stability_score_thresh=args.sam_stability_thresh,
        crop_n_layers=args.sam_crop_layers,
        crop_overlap_ratio=args.sam_crop_overlap,
        min_mask_region_area=args.sam_min_region_area,
    )
    return SamInstanceSegmenter(
        predictor.segmentor,
        sam,
        options,
        score_mode=args.sam_score,
        nms_iou=None if args.sam_nms_iou >= 1.0 else args.sam_nms_iou,
        class_agnostic_nms=args.sam_class_agnostic_nms,
        min_score=args.sam_min_score,
        min_area=args.sam_min_area,
        max_instances=args.sam_max_instances,
    )


def _summary(done: int, out_dir: Path, skipped: dict[str, list[Path]]) -> str:
    text = f"Wrote {done} result(s) to {out_dir}"
    if not skipped:
        return text
    parts = []
    for reason, paths in skipped.items():
        names = ", ".join(p.name for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
        parts.append(f"{len(paths)} {reason} ({names})")
    return f"{text}; skipped {sum(map(len, skipped.values()))}: " + ", ".join(parts)


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _resolve_inputs(args: argparse.Namespace) -> tuple[str, list[Path], int | None]:
    """The run's kind (``"images"``, ``"sequence"``, ``"video"``, ``"camera"``), its input paths
    and the camera index."""
    inputs: list[str] = list(args.input or [])
    if args.webcam is not None:
        if inputs:
            raise UserError("give --input or --webcam, not both")
        return "camera", [], args.webcam
    if not inputs:
        raise UserError("one of --input or --webcam is required (see --help)")
    if len(inputs) == 1 and inputs[0].strip().isdigit() and not Path(inputs[0]).exists():
        return "camera", [], int(inputs[0])
    if len(inputs) == 1 and not _has_glob(inputs[0]):
        src = Path(inputs[0])
        if not src.exists():
            raise FileNotFoundError(f"input not found: '{src}'")
        return ("video" if src.is_file() and is_video_path(src) else "images"), [src], None
    paths: list[Path] = []
    for text in inputs:
        if Path(text).exists() or not _has_glob(text):
            if not Path(text).is_file():
                raise FileNotFoundError(f"input not found or not a file: '{text}'")
            paths.append(Path(text))
            continue
        matches = sorted(p for p in glob.glob(text) if Path(p).is_file())
        if not matches:
            raise FileNotFoundError(f"no file matches '{text}'")
        paths.extend(Path(p) for p in matches)
    if any(is_video_path(p) for p in paths):
        raise UserError("a sequence is made of images; give one video at a time")
    return "sequence", paths, None


def _display_available() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class _Window:
    """``--show``: a cv2 window when a display exists, else nothing (one warning)."""

    def __init__(self, wanted: bool) -> None:
        self.on = wanted and _display_available()
        if wanted and not self.on:
            logging.warning("--show ignored: no display (DISPLAY is not set).")

    def show(self, rgb: np.ndarray) -> bool:
        """Display an RGB image; ``False`` when the user pressed ``q``."""
        if not self.on:
            return True
        import cv2

        try:
            cv2.imshow("ovdense", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            return (cv2.waitKey(1) & 0xFF) != ord("q")
        except cv2.error as err:  # e.g. opencv-python-headless
            logging.warning("--show ignored: OpenCV cannot open a window (%s).", str(err).strip())
            self.on = False
            return True

    def close(self) -> None:
        if self.on:
            import cv2

            cv2.destroyAllWindows()


def _segment(
    predictor: Predictor,
    image: np.ndarray,
    vocab: Vocabulary,
    prob_thd: float | None,
    smoother: TemporalSmoother | None,
) -> Prediction:
    """One frame's prediction; with a smoother the labels come from the smoothed probabilities."""
    predictor.set_image(image)
    try:
        if smoother is None:
            return predictor.predict(vocab, prob_thd=prob_thd, return_probs=False)
        pred = predictor.predict(vocab, prob_thd=prob_thd, return_probs=True)
        assert pred.probs is not None
        probs = smoother.update(pred.probs)
        labels = predictor.segmentor.assign_labels(probs[None], prob_thd, pred.vocabulary)
        return replace(pred, labels=labels[0].cpu().numpy(), probs=None)
    finally:
        predictor.reset_image()


def _build(args: argparse.Namespace) -> Predictor:
    seg = build_segmentor(
        args.config,
        **model_source(args),
        overrides=args.opts,
        device=resolve_device(args.device),
        # the --background class is class 0 whatever its names (e.g. "sky|wall")
        **({"background_index": 0} if adds_background(args) else {}),
    )
    if args.sam_refine:
        sam = tiny_sam() if args.sam_tiny_random else None
        attach_sam_refiner(seg, args.sam_kind, args.sam_checkpoint, sam=sam)
    return Predictor(seg)


def _run_video(
    args: argparse.Namespace, vocab: Vocabulary, source: Path | int, out_dir: Path
) -> int:
    """A video file or a camera: an overlay video (and label PNGs with ``--save-frames``)."""
    import cv2

    camera = isinstance(source, int)
    src = Path(os.devnull) if isinstance(source, int) else Path(source)
    cap = open_capture(source)  # before the model is loaded: a bad file fails fast
    try:
        fps = capture_fps(cap)
        total = None if camera else capture_frame_count(cap)
        stem = f"webcam{source}" if camera else src.stem
        check_output_folder(out_dir, src, False)
        check_sam_source(args)
        predictor = _build(args)
        labeler = build_instance_segmenter(args, predictor) if args.sam_masks else None
        out_dir.mkdir(parents=True, exist_ok=True)
        smoother = TemporalSmoother(args.smooth) if args.smooth > 0 else None
        window = _Window(args.show)
        meter = FlickerMeter()
        counts = np.zeros(len(vocab), dtype=np.int64)
        pixels = 0
        video_path = out_dir / f"{stem}_overlay.mp4"
        n = 0
        size: tuple[int, int] | None = None
        with atomic_write(video_path, suffix=".mp4") as tmp:
            writer = None
            frames = read_frames(cap, args.max_frames)
            bar = tqdm(frames, desc="Segmenting", unit="frame", total=total)
            try:
                for frame in bar:
                    if labeler is not None:
                        inst = labeler.predict(frame, vocab, args.prob_thd)
                        labels = inst.label_map(fill=-1)
                        doc = instances_document(
                            inst, image=f"{_source_name(source)} frame {n}", image_id=n, frame=n
                        )
                        text = json.dumps(doc, indent=1, ensure_ascii=False)
                        atomic_write_text(out_dir / f"{stem}_{n:06d}.json", text)
                    else:
                        pred = _segment(predictor, frame, vocab, args.prob_thd, smoother)
                        labels = pred.labels
                    if writer is None:
                        size = (frame.shape[1], frame.shape[0])
                        writer = cv2.VideoWriter(
                            str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, size
                        )
                        if not writer.isOpened():
                            raise OSError(
                                f"cannot write the video '{video_path}': OpenCV cannot encode "
                                "mp4v here or the folder is not writable."
                            )
                    if labeler is not None:
                        vis = draw_instances(frame, inst, alpha=args.alpha, legend=False)
                    else:
                        vis = overlay(
                            frame, labels, vocab.display_names, alpha=args.alpha, legend=False
                        )
                    if (vis.shape[1], vis.shape[0]) != size:
                        vis = cv2.resize(vis, size, interpolation=cv2.INTER_NEAREST)
                    writer.write(cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
                    if args.save_frames:
                        name = out_dir / f"{stem}_{n:06d}_labels.png"
                        with atomic_write(name, suffix=".png") as png:
                            save_label_png(labels, png, class_names=vocab.display_names)
                    counts += np.bincount(labels[labels >= 0].ravel(), minlength=len(vocab))
                    pixels += labels.size
                    meter.add(labels)
                    n += 1
                    if not window.show(vis):
                        break
            except KeyboardInterrupt:
                if not camera:
                    raise
            finally:
                bar.close()
                if writer is not None:
                    writer.release()
                window.close()
            if n == 0:
                raise ValueError(f"no frame could be read from {_source_name(source)}.")
    finally:
        cap.release()
    # instances leave pixels unlabelled: their areas are fractions of all pixels
    area = counts / max(1, pixels if labeler is not None else counts.sum())
    summary = {
        "video": _source_name(source),
        "classes": vocab.display_names,
        "frames": n,
        "fps": fps,
        "size": list(size) if size else None,
        "smooth": args.smooth,
        "flicker": round(meter.value, 6),
        **({"instances": "per frame: <name>_<frame>.json"} if labeler is not None else {}),
        "present": {
            vocab.display_names[i]: round(float(area[i]), 5)
            for i in np.argsort(-counts, kind="stable")
            if counts[i] > 0
        },
    }
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"Wrote {n} frame(s) to {video_path} (flicker {meter.value:.4f})")
    return 0


def _source_name(source: Path | int) -> str:
    return f"camera {source}" if isinstance(source, int) else f"'{source}'"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    vocab = build_vocabulary(args)
    kind, paths, camera = _resolve_inputs(args)
    out_dir = Path(args.output)
    if kind == "camera":
        assert camera is not None
        return _run_video(args, vocab, camera, out_dir)
    if kind == "video":
        return _run_video(args, vocab, paths[0], out_dir)
    if kind == "sequence":
        images = paths
        folder_run = False
        for parent in sorted({p.parent for p in paths}):
            check_output_folder(out_dir, parent, False)
        stems = output_stems(images, None)
    else:
        src = paths[0]
        folder_run = src.is_dir()
        images = list_images(src, recursive=args.recursive) if folder_run else [src]
        check_output_folder(out_dir, src, args.recursive)
        stems = output_stems(images, src if folder_run else None)
    limit = image_mod.MAX_IMAGE_PIXELS if args.max_image_pixels is None else args.max_image_pixels
    check_sam_source(args)
    predictor = _build(args)
    labeler = build_instance_segmenter(args, predictor) if args.sam_masks else None
    out_dir.mkdir(parents=True, exist_ok=True)
    smoother = TemporalSmoother(args.smooth) if args.smooth > 0 else None
    window = _Window(args.show)
    skipped: dict[str, list[Path]] = {}
    unit = "frame" if kind == "sequence" else "image"
    bar = tqdm(images, desc="Segmenting", unit=unit, disable=len(images) < 2)
    for path, stem in zip(bar, stems):
        stage = "unreadable"
        try:
            image = load_image(path, max_pixels=limit)
            stage = "failed to segment"
            if labeler is not None:
                inst = labeler.predict(image, vocab, args.prob_thd)
            else:
                pred = _segment(predictor, image, vocab, args.prob_thd, smoother)
        except (ValueError, OSError) as err:
            if not folder_run or (stage != "unreadable" and isinstance(err, OSError)):
                raise
            reason = "too large" if isinstance(err, ImageTooLargeError) else stage
            tqdm.write(f"skipped {path}: {err}")
            skipped.setdefault(reason, []).append(path)
            predictor.reset_image()
            continue
        if labeler is not None:
            write_instance_outputs(out_dir, stem, path, image, inst, args.alpha)
            if window.on:
                window.show(draw_instances(image, inst, alpha=args.alpha))
            del image, inst
            continue
        write_outputs(out_dir, stem, path, image, pred, args.alpha)
        if window.on:
            window.show(overlay(image, pred.labels, pred.classes, alpha=args.alpha))
        del image, pred
    window.close()
    done = len(images) - sum(map(len, skipped.values()))
    print(_summary(done, out_dir, skipped))
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
