"""A procedural open-vocabulary world: coloured shapes on textured backgrounds.

A **test and demo asset**, not a benchmark of real-world skill: offline (CI included) no real
CLIP weights or datasets can be downloaded, so ovdense ships a small world in which the
*semantics* of a method can still be measured ("does it find the red star?").

Every scene is a pure function of ``(seed, index)``: 1 to ``max_objects`` objects, each a
shape (:data:`SHAPES`) in a colour (:data:`COLOURS`) at a random size, position and rotation,
drawn in order over a background (noise, gradient, stripes or checkerboard in muted tones), so
later objects may hide parts of earlier ones. A scene carries its image, a caption naming its
objects, the semantic label map, the visible instance masks and their boxes.

Some colour-shape compositions are never drawn in the ``"train"`` split
(:data:`HELD_OUT`): every colour and every shape word is seen in training, the combination is
not. The ``"val"`` split draws all compositions uniformly, and the class groups ``"seen"`` and
``"held_out"`` (:func:`class_groups`) let evaluations report them separately.

Class index convention (:func:`class_names`): ``0`` = ``"background"``, then
``"<colour> <shape>"`` for every colour (outer loop) and shape (inner loop).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..utils.io import atomic_write
from ..utils.labels import save_label_image

__all__ = [
    "COLOURS",
    "HELD_OUT",
    "SHAPES",
    "Scene",
    "ShapesCaptionDataset",
    "ShapesSegDataset",
    "class_groups",
    "class_names",
    "generate_background",
    "generate_scene",
    "train_class_names",
    "write_shapes_det",
    "write_shapes_seg",
]

#: Object colours (name -> RGB); every object's colour is jittered by up to +-``_COLOUR_JITTER``.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 220),
    "yellow": (240, 215, 30),
    "purple": (145, 50, 190),
    "orange": (250, 135, 20),
}

#: Object shapes.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")

#: Compositions never drawn in the training split (each colour once; every shape word is
#: still seen with the other colours).
HELD_OUT: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("green", "cross"),
    ("blue", "triangle"),
    ("yellow", "square"),
    ("purple", "circle"),
    ("orange", "cross"),
)

SPLITS = ("train", "val")
BACKGROUNDS = ("noise", "gradient", "stripes", "checker")
_BACKGROUND_WORDS = {
    "noise": "noisy",
    "gradient": "gradient",
    "stripes": "striped",
    "checker": "checkered",
}

_COLOUR_JITTER = 20
_MIN_VISIBLE = 0.6  # an object keeps at least this fraction of its area visible
_PLACEMENT_TRIES = 20
_SCENE_TRIES = 50


def class_names() -> list[str]:
    """``["background", "red circle", "red square", ...]`` (index = label value)."""
    return ["background"] + [f"{c} {s}" for c in COLOURS for s in SHAPES]


def class_groups() -> dict[str, tuple[int, ...]]:
    """Class indices of the ``"seen"`` and ``"held_out"`` compositions (background excluded)."""
    held = {f"{c} {s}" for c, s in HELD_OUT}
    names = class_names()
    return {
        "seen": tuple(i for i, n in enumerate(names) if i > 0 and n not in held),
        "held_out": tuple(i for i, n in enumerate(names) if n in held),
    }


@dataclass
class Scene:
    """One generated scene.

    Attributes:
        image: ``uint8 [H, W, 3]`` RGB.
        label: ``int64 [H, W]``: the class index (:func:`class_names`) of the visible object
            at each pixel, 0 for background.
        masks: ``bool [K, H, W]``: the visible pixels of each object, in drawing order.
        boxes: ``float32 [K, 4]``: ``x0, y0, x1, y1`` of each visible mask, in pixels
            (``x1``/``y1`` exclusive: a one-pixel object at column 3 has ``x0=3, x1=4``).
        labels: ``int64 [K]``: class index of each object.
        caption: Names every class present once, e.g. ``"a photo of a red circle and a blue
            star."``.
        background: The background kind (one of ``BACKGROUNDS``).
    """

    image: np.ndarray
    label: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    caption: str
    background: str


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(50, 205)
    return np.clip(grey + rng.uniform(-22, 22, size=3), 0, 255)


def _background(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    a, b = _muted_colour(rng), _muted_colour(rng)
    if kind == "noise":
        img = a + rng.normal(0.0, rng.uniform(8, 30), size=(size, size, 3))
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = a + (b - a) * t[..., None]
    elif kind == "stripes":
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(0.08, 0.3)
        t = (np.cos(angle) * xx + np.sin(angle) * yy) / period
        img = np.where((np.floor(t) % 2 == 0)[..., None], a, b)
    else:  # checker
        cells = rng.integers(3, 9)
        t = (np.floor(xx * cells * 0.999) + np.floor(yy * cells * 0.999)) % 2
        img = np.where((t == 0)[..., None], a, b)
    img = img + rng.normal(0.0, 4.0, size=(size, size, 3))
    return img


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
        pts = [(x * 0.9, y * 0.9) for x, y in pts]
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    elif shape == "star":
        pts = [
            (
                (1.0 if k % 2 == 0 else 0.42) * math.cos(a),
                (1.0 if k % 2 == 0 else 0.42) * math.sin(a),
            )
            for k, a in enumerate(np.arange(10) * math.pi / 5 - math.pi / 2)
        ]
    elif shape == "cross":
        w = 0.34
        pts = [
            (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1),
            (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1),
        ]  # fmt: skip
    else:
        raise ValueError(f"Unknown shape {shape!r}; choose from {', '.join(SHAPES)}.")
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (c * x - s * y), cy + r * (s * x + c * y)) for x, y in pts]


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=1)
    return np.asarray(canvas, dtype=bool)


def _listed(rng: np.random.Generator, names: list[str]) -> str:
    """``names`` in a random order with articles: "a red circle and an orange star"."""
    order = [names[i] for i in rng.permutation(len(names))]
    items = [f"{'an' if n[0] in 'aeiou' else 'a'} {n}" for n in order]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _caption(rng: np.random.Generator, names: list[str], background: str) -> str:
    listed = _listed(rng, names)
    template = int(rng.integers(4))
    if template == 0:
        return f"a photo of {listed}."
    if template == 1:
        return f"{listed}."
    if template == 2:
        return f"an image with {listed}."
    return f"{listed} on a {_BACKGROUND_WORDS[background]} background."


def generate_scene(
    seed: int,
    index: int,
    size: int = 64,
    split: str = "train",
    max_objects: int = 5,
    radius: tuple[float, float] = (0.12, 0.3),
    objects: Sequence[str] | None = None,
) -> Scene:
    """Draw scene ``index`` of the world ``seed`` (a pure function of all arguments).

    Args:
        seed: World seed.
        index: Scene number (any non-negative int).
        size: Image side in pixels (square images).
        split: ``"train"`` (held-out compositions never drawn) or ``"val"`` (all compositions).
        max_objects: At most this many objects (at least one).
        radius: Range of object radii as fractions of ``size``.
        objects: Draw exactly these compositions (e.g. ``["red circle", "blue square"]``, in
            drawing order) instead of random ones; ``split`` and ``max_objects`` are then
            not used to pick them.

    Returns:
        The scene; objects that could not be placed with at least 60 % of their area visible
        are left out (every scene keeps at least one object).

    Raises:
        ValueError: Unknown split, ``size < 16``, ``max_objects < 1``, an unknown object name,
            or objects that do not fit (after 50 redraws).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}.")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}.")
    names = class_names()
    held = {f"{c} {s}" for c, s in HELD_OUT}
    allowed = [i for i in range(1, len(names)) if split == "val" or names[i] not in held]

    wanted: list[int] | None = None
    if objects is not None:
        unknown = [o for o in objects if o not in names[1:]]
        if unknown or not objects:
            raise ValueError(
                f"Unknown shapes-world objects {unknown}; give one or more of: "
                f"{', '.join(names[1:])}."
            )
        wanted = [names.index(o) for o in objects]

    # a scene whose objects cannot all be placed is redrawn from the next random stream
    for attempt in range(_SCENE_TRIES):
        stream = [int(seed), int(index) + attempt * 1_000_003, SPLITS.index(split)]
        scene = _draw_scene(
            np.random.default_rng(stream), size, allowed, wanted, max_objects, radius
        )
        if scene is not None:
            return scene
    raise ValueError(
        f"Could not place {len(wanted) if wanted else 'any of the'} objects in a {size}x{size} "
        f"image with "
        f"{_MIN_VISIBLE:.0%} of each visible; use a larger size or fewer objects."
    )


def _draw_scene(
    rng: np.random.Generator,
    size: int,
    allowed: list[int],
    wanted: list[int] | None,
    max_objects: int,
    radius: tuple[float, float],
) -> Scene | None:
    """One try at a scene (None when not every wanted object, or no object, could be placed)."""
    names = class_names()
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    image = _background(rng, size, kind)
    label = np.zeros((size, size), dtype=np.int64)
    owner = np.full((size, size), -1, dtype=np.int64)  # object index on top at each pixel
    full: list[np.ndarray] = []
    classes: list[int] = []
    n_objects = len(wanted) if wanted is not None else int(rng.integers(1, max_objects + 1))
    for k_obj in range(n_objects):
        cls = wanted[k_obj] if wanted is not None else allowed[int(rng.integers(len(allowed)))]
        colour, shape = names[cls].split(" ")
        for _try in range(_PLACEMENT_TRIES):
            r = rng.uniform(*radius) * size
            cx, cy = rng.uniform(r * 0.7, size - r * 0.7, size=2)
            mask = _shape_mask(shape, size, cx, cy, r, rng.uniform(0, 2 * math.pi))
            area = mask.sum()
            if area == 0:
                continue
            # The new object may hide earlier ones: each must stay >= _MIN_VISIBLE visible.
            covered = np.bincount(owner[mask & (owner >= 0)], minlength=len(full))
            visible_before = [(owner == k).sum() for k in range(len(full))]
            if all(
                visible_before[k] - covered[k] >= _MIN_VISIBLE * full[k].sum()
                for k in range(len(full))
            ):
                break
        else:
            continue
        rgb = np.clip(np.array(COLOURS[colour]) + rng.uniform(-1, 1, 3) * _COLOUR_JITTER, 0, 255)
        shade = rng.normal(0.0, 6.0, size=(size, size, 3))
        image = np.where(mask[..., None], rgb + shade, image)
        owner[mask] = len(full)
        label[mask] = cls
        full.append(mask)
        classes.append(cls)
    if not full or (wanted is not None and len(full) < len(wanted)):  # placement failed
        return None

    masks = np.stack([owner == k for k in range(len(full))])
    boxes = np.zeros((len(full), 4), dtype=np.float32)
    for k, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes[k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    present = sorted(set(classes), key=classes.index)
    caption = _caption(rng, [names[c] for c in present], kind)
    return Scene(
        image=np.clip(image, 0, 255).astype(np.uint8),
        label=label,
        masks=masks,
        boxes=boxes,
        labels=np.asarray(classes, dtype=np.int64),
        caption=caption,
        background=kind,
    )


def generate_background(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, str]:
    """An object-free scene: ``(uint8 [size, size, 3] image, caption)``, a pure function of the
    arguments; the caption names the background, e.g. ``"a striped background."``."""
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}.")
    rng = np.random.default_rng([int(seed), int(index), _EMPTY_STREAM])
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    image = np.clip(_background(rng, size, kind), 0, 255).astype(np.uint8)
    word = _BACKGROUND_WORDS[kind]
    template = int(rng.integers(3))
    caption = (
        f"a {word} background."
        if template == 0
        else f"a photo of a {word} background."
        if template == 1
        else "a background."
    )
    return image, caption


def _present(scene: Scene) -> list[str]:
    """The names of the classes in the scene, each once, in drawing order."""
    labels = scene.labels.tolist()
    return [class_names()[c] for c in sorted(set(labels), key=labels.index)]


def _background_caption(rng: np.random.Generator, scene: Scene) -> str:
    """The caption "<objects> on a <kind> background."."""
    listed = _listed(rng, _present(scene))
    return f"{listed} on a {_BACKGROUND_WORDS[scene.background]} background."


def _object_caption(rng: np.random.Generator, scene: Scene) -> str:
    """A caption naming the scene's objects only (one of the three object templates)."""
    listed = _listed(rng, _present(scene))
    template = ("a photo of {}.", "{}.", "an image with {}.")[int(rng.integers(3))]
    return template.format(listed)


_EMPTY_STREAM = 7  # random stream of the object-free scenes and caption choices (not a split)


class ShapesCaptionDataset(torch.utils.data.Dataset):
    """Image-caption pairs of the shapes world, generated on the fly (for CLIP training).

    Args:
        length: Number of scenes (scene ``i`` is ``generate_scene(seed, i, ...)``).
        seed: World seed.
        size: Image side in pixels.
        split: ``"train"`` or ``"val"``.
        max_objects: At most this many objects per scene.
        empty_fraction: This fraction of the items (chosen by a fixed random stream per
            index) are object-free scenes (:func:`generate_background`) captioned with their
            background ("a striped background."), the way web captions name walls and skies:
            the text "background" gets grounded in background pixels.
        background_caption_fraction: When set, this fraction of the scenes with objects are
            captioned "<objects> on a <kind> background." and the others with the scene's own
            caption re-drawn without that template; ``None`` keeps the scene's caption
            (a quarter of them name the background).

    Items are dicts with ``image`` (``float32 [3, size, size]`` in ``[0, 1]``), ``caption``
    (str) and ``index`` (int).
    """

    def __init__(
        self,
        length: int,
        seed: int = 0,
        size: int = 64,
        split: str = "train",
        max_objects: int = 5,
        empty_fraction: float = 0.0,
        background_caption_fraction: float | None = None,
    ) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}.")
        if not 0.0 <= empty_fraction <= 1.0:
            raise ValueError(f"empty_fraction must be in [0, 1], got {empty_fraction}.")
        if background_caption_fraction is not None and not 0.0 <= background_caption_fraction <= 1:
            raise ValueError(
                f"background_caption_fraction must be in [0, 1] or None, "
                f"got {background_caption_fraction}."
            )
        self.length = int(length)
        self.seed = int(seed)
        self.size = int(size)
        self.split = split
        self.max_objects = int(max_objects)
        self.empty_fraction = float(empty_fraction)
        self.background_caption_fraction = background_caption_fraction

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} scenes.")
        caption: str
        if self.empty_fraction > 0 or self.background_caption_fraction is not None:
            rng = np.random.default_rng([self.seed, int(index), _EMPTY_STREAM, 1])
            if rng.random() < self.empty_fraction:
                pixels, caption = generate_background(self.seed, index, self.size)
                image = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)
                return {"image": image, "caption": caption, "index": index}
        scene = generate_scene(self.seed, index, self.size, self.split, self.max_objects)
        caption = scene.caption
        if self.background_caption_fraction is not None:
            if rng.random() < self.background_caption_fraction:
                caption = _background_caption(rng, scene)
            elif caption.endswith(" background."):  # the scene's own background template
                caption = _object_caption(rng, scene)
        image = torch.from_numpy(scene.image).permute(2, 0, 1).float().div_(255.0)
        return {"image": image, "caption": caption, "index": index}


def train_class_names() -> list[str]:
    """The classes a trained head may see as labels: ``"background"`` and the seen
    compositions (:func:`class_names` without :data:`HELD_OUT`), in that order."""
    names = class_names()
    return ["background"] + [names[i] for i in class_groups()["seen"]]


class ShapesSegDataset(torch.utils.data.Dataset):
    """Images and semantic labels of the shapes world's *training* distribution, generated on
    the fly (for training segmentation heads).

    Scenes come from the ``"train"`` split, where the held-out compositions are never drawn,
    and labels index :func:`train_class_names` (background and the seen compositions only), so
    a head trained on them never sees a held-out name, as a label or as a negative.

    Args:
        length: Number of scenes (scene ``i`` is ``generate_scene(seed, i, size, "train")``).
        seed: World seed (use another than the validation set's :data:`VAL_SEED`).
        size: Image side in pixels.
        max_objects: At most this many objects per scene.

    Items are dicts with ``image`` (``float32 [3, size, size]`` in ``[0, 1]``), ``label``
    (``int64 [size, size]``, indices into :func:`train_class_names`) and ``index``.
    """

    def __init__(self, length: int, seed: int = 0, size: int = 64, max_objects: int = 5) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}.")
        self.length, self.seed, self.size = int(length), int(seed), int(size)
        self.max_objects = int(max_objects)
        full = class_names()
        train = train_class_names()
        lut = np.full(len(full), -1, dtype=np.int64)
        for j, name in enumerate(train):
            lut[full.index(name)] = j
        self._lut = lut

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} scenes.")
        scene = generate_scene(self.seed, index, self.size, "train", self.max_objects)
        label = self._lut[scene.label]
        if (label < 0).any():  # the train split never draws a held-out composition
            raise RuntimeError("a held-out composition in the training split")
        image = torch.from_numpy(scene.image).permute(2, 0, 1).float().div_(255.0)
        return {"image": image, "label": torch.from_numpy(label), "index": index}


def scenes(
    seed: int, indices: Sequence[int], size: int = 64, split: str = "val", max_objects: int = 5
) -> list[Scene]:
    """``[generate_scene(seed, i, size, split, max_objects) for i in indices]``."""
    return [generate_scene(seed, i, size, split, max_objects) for i in indices]


# --------------------------------------------------------------------------------------------
# Validation sets written to disk (the catalog's ``shapes_seg`` and ``shapes_det``)
# --------------------------------------------------------------------------------------------

#: World seed, number of images and image side of the written validation sets.
VAL_SEED = 1
VAL_IMAGES = 200
VAL_SIZE = 128


def _val_scenes(
    num_images: int | None, seed: int, size: int, split: str = "val"
) -> list[tuple[str, Scene]]:
    n = VAL_IMAGES if num_images is None else num_images  # read at call time
    return [(f"{i:05d}", generate_scene(seed, i, size, split)) for i in range(n)]


def write_shapes_seg(
    folder: str | os.PathLike,
    num_images: int | None = None,
    seed: int = VAL_SEED,
    size: int = VAL_SIZE,
) -> None:
    """Write the semantic-segmentation val set (``num_images`` default :data:`VAL_IMAGES`):
    ``images/{id}.png``, ``labels/{id}.png`` (class index per pixel, :func:`class_names`
    order) and ``classes.txt``."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for sid, scene in _val_scenes(num_images, seed, size):
        Image.fromarray(scene.image).save(folder / "images" / f"{sid}.png")
        save_label_image(scene.label.astype(np.uint8), folder / "labels" / f"{sid}.png")
    (folder / "classes.txt").write_text("\n".join(class_names()) + "\n", encoding="utf-8")


def write_shapes_det(
    folder: str | os.PathLike,
    num_images: int | None = None,
    seed: int = VAL_SEED,
    size: int = VAL_SIZE,
    split: str = "val",
) -> None:
    """Write the instance val set (``num_images`` default :data:`VAL_IMAGES`) in COCO format:
    ``images/{id}.png`` and ``instances.json``
    (``bbox`` = visible extent ``[x, y, w, h]``, ``segmentation`` = RLE of the visible mask,
    category ids ``1..30`` = :func:`class_names` indices, ``held_out`` flag per category).
    ``split="train"`` writes scenes of the training distribution instead (held-out
    compositions never drawn; all 30 categories are still listed)."""
    from pycocotools import mask as mask_utils

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    held = {f"{c} {s}" for c, s in HELD_OUT}
    names = class_names()
    categories = [
        {"id": i, "name": n, "supercategory": "shape", "held_out": n in held}
        for i, n in enumerate(names)
        if i > 0
    ]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, (sid, scene) in enumerate(_val_scenes(num_images, seed, size, split), start=1):
        Image.fromarray(scene.image).save(folder / "images" / f"{sid}.png")
        images.append({"id": image_id, "file_name": f"{sid}.png", "height": size, "width": size})
        for mask, box, cls in zip(scene.masks, scene.boxes, scene.labels):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": int(mask.sum()),
                    "segmentation": rle,
                    "iscrowd": 0,
                }
            )
    data = {"images": images, "annotations": annotations, "categories": categories}
    (folder / "instances.json").write_text(json.dumps(data), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """``tools/make_shapes_scene.py``: write one scene (image, label map, caption); user errors
    are one line on stderr and exit code 2 (:func:`ovdense.utils.cli.run_cli`)."""
    from ..utils.cli import run_cli

    return run_cli(_make_scene, argv)


def _make_scene(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Write one scene of the shapes world.")
    p.add_argument("--output", required=True, help="image file to write (.png)")
    p.add_argument("--objects", default=None, help='e.g. "red circle,blue square"')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--size", type=int, default=VAL_SIZE)
    p.add_argument("--label", default=None, help="also write the label map (.png)")
    args = p.parse_args(argv)
    objects = [o.strip() for o in args.objects.split(",")] if args.objects else None
    scene = generate_scene(args.seed, args.index, args.size, "val", objects=objects)
    with atomic_write(args.output, suffix=Path(args.output).suffix or ".png") as tmp:
        Image.fromarray(scene.image).save(tmp)
    if args.label:
        with atomic_write(args.label, suffix=Path(args.label).suffix or ".png") as tmp:
            save_label_image(scene.label.astype(np.uint8), tmp)
    print(scene.caption)
    return 0
