"""COCO-format annotation sets read as region-annotated images.

:class:`CocoPanoptic` (``panoptic_val2017.json`` + the panoptic PNGs + the images; opened by
:func:`load_coco_panoptic`) and :class:`CocoInstances` (an ``instances.json`` + images, e.g. the
shapes world's ``shapes_det``) both iterate :class:`PanopticImage` items: an image path and its
ground-truth segments (category, thing flag, XYXY box, decoded mask). Region classification
(:func:`ovdense.evaluation.regions.evaluate_regions`) scores a segmentor on them.

Category names come from the JSON; COCO's stuff names are cleaned for the prompts by
:func:`clean_category_name` (``"wall-other-merged"`` -> ``"wall"``,
``"window-blind"`` -> ``"window blind"``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "CocoInstances",
    "CocoPanoptic",
    "PanopticCategory",
    "PanopticImage",
    "PanopticSegment",
    "clean_category_name",
    "load_coco_panoptic",
]

_SUFFIXES = ("-merged", "-other", "-stuff")


def clean_category_name(name: str) -> str:
    """A COCO panoptic category name as a prompt: drop ``-merged`` / ``-other`` / ``-stuff``
    suffixes (repeatedly, so ``"wall-other-merged"`` -> ``"wall"``), then ``-`` -> space."""
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                changed = True
    return name.replace("-", " ").strip()


@dataclass(frozen=True)
class PanopticCategory:
    """One panoptic category: its COCO ``id``, JSON ``name``, prompt name and thing flag."""

    id: int
    name: str
    isthing: bool

    @property
    def prompt_name(self) -> str:
        """The cleaned name used for the text embedding (see :func:`clean_category_name`)."""
        return clean_category_name(self.name)


@dataclass
class PanopticSegment:
    """One ground-truth segment.

    Attributes:
        id: the segment id (``R + 256 G + 256**2 B`` in the panoptic PNG).
        category_id: COCO category id.
        category_index: index of the category in :attr:`CocoPanoptic.categories`.
        isthing: whether the category is a thing.
        bbox: ``(x1, y1, x2, y2)`` pixels, from the JSON's XYWH box.
        mask: ``[H, W]`` bool mask decoded from the panoptic PNG.
        iscrowd: the JSON's crowd flag.
    """

    id: int
    category_id: int
    category_index: int
    isthing: bool
    bbox: tuple[float, float, float, float]
    mask: np.ndarray
    iscrowd: bool = False


@dataclass
class PanopticImage:
    """An image of the panoptic set with its segments (``height x width`` pixels)."""

    image_id: int
    image_path: Path
    height: int
    width: int
    segments: list[PanopticSegment] = field(default_factory=list)


class CocoPanoptic:
    """A COCO-panoptic annotation set; iterating decodes one image's segments at a time.

    Args:
        json_path: the panoptic JSON (``panoptic_val2017.json``).
        png_dir: folder of the panoptic PNGs (``panoptic_val2017/``).
        image_dir: folder of the images (``val2017/``).
        limit: keep only the first ``limit`` annotated images (JSON order).
        skip_crowd: drop segments flagged ``iscrowd``.

    Raises:
        FileNotFoundError: a missing JSON or folder.
        ValueError: a JSON without the panoptic keys, or an annotation of an unknown image or
            category.
    """

    def __init__(
        self,
        json_path: str | os.PathLike,
        png_dir: str | os.PathLike,
        image_dir: str | os.PathLike,
        limit: int | None = None,
        skip_crowd: bool = False,
    ) -> None:
        json_path, self.png_dir, self.image_dir = Path(json_path), Path(png_dir), Path(image_dir)
        if not json_path.is_file():
            raise FileNotFoundError(f"Panoptic JSON not found: '{json_path}'.")
        for what, folder in (("panoptic PNG", self.png_dir), ("image", self.image_dir)):
            if not folder.is_dir():
                raise FileNotFoundError(f"The {what} folder '{folder}' does not exist.")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}.")
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"'{json_path}' is not valid JSON: {err}.") from None
        missing = [k for k in ("images", "annotations", "categories") if k not in data]
        if missing:
            raise ValueError(
                f"'{json_path}' is not a COCO panoptic JSON: no {', '.join(missing)} key(s)."
            )
        self.categories = [
            PanopticCategory(int(c["id"]), str(c["name"]), bool(c.get("isthing", 1)))
            for c in data["categories"]
        ]
        self._cat_index = {c.id: i for i, c in enumerate(self.categories)}
        self._images = {int(im["id"]): im for im in data["images"]}
        annotations = list(data["annotations"])
        self.annotations = annotations if limit is None else annotations[:limit]
        self.skip_crowd = skip_crowd
        for ann in self.annotations:
            if int(ann["image_id"]) not in self._images:
                raise ValueError(
                    f"Annotation '{ann['file_name']}' names unknown image id {ann['image_id']}."
                )
            for seg in ann["segments_info"]:
                if int(seg["category_id"]) not in self._cat_index:
                    raise ValueError(
                        f"Segment {seg['id']} of '{ann['file_name']}' has unknown category id "
                        f"{seg['category_id']}."
                    )

    @property
    def class_names(self) -> list[str]:
        """Cleaned names of the categories, in order (the vocabulary)."""
        return [c.prompt_name for c in self.categories]

    @property
    def isthing(self) -> list[bool]:
        """Thing flag of each category, in order."""
        return [c.isthing for c in self.categories]

    def __len__(self) -> int:
        return len(self.annotations)

    def __iter__(self) -> Iterator[PanopticImage]:
        for ann in self.annotations:
            yield self._load(ann)

    def _load(self, ann: dict[str, Any]) -> PanopticImage:
        info = self._images[int(ann["image_id"])]
        png_path = self.png_dir / ann["file_name"]
        if not png_path.is_file():
            raise FileNotFoundError(f"Panoptic PNG not found: '{png_path}'.")
        with Image.open(png_path) as im:
            rgb = np.asarray(im.convert("RGB")).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
        height, width = int(info.get("height", ids.shape[0])), int(info.get("width", ids.shape[1]))
        if ids.shape != (height, width):
            raise ValueError(
                f"Panoptic PNG '{png_path}' is {ids.shape[0]}x{ids.shape[1]} but the JSON says "
                f"{height}x{width}."
            )
        segments = []
        for seg in ann["segments_info"]:
            crowd = bool(seg.get("iscrowd", 0))
            if crowd and self.skip_crowd:
                continue
            x, y, w, h = (float(v) for v in seg["bbox"])
            cat = int(seg["category_id"])
            index = self._cat_index[cat]
            segments.append(
                PanopticSegment(
                    id=int(seg["id"]),
                    category_id=cat,
                    category_index=index,
                    isthing=self.categories[index].isthing,
                    bbox=(x, y, x + w, y + h),
                    mask=ids == int(seg["id"]),
                    iscrowd=crowd,
                )
            )
        return PanopticImage(
            image_id=int(info["id"]),
            image_path=self.image_dir / info["file_name"],
            height=height,
            width=width,
            segments=segments,
        )


def load_coco_instances(json_path: str | os.PathLike) -> Any:
    """A ``pycocotools.coco.COCO`` index of a COCO instances JSON (without pycocotools'
    progress prints).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the JSON is not COCO instances (no ``images``/``annotations``/``categories``).
    """
    from pycocotools.coco import COCO

    path = Path(json_path)
    if not path.is_file():
        raise FileNotFoundError(f"Instances JSON not found: '{path}'.")
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"'{path}' is not a COCO instances file: no {missing} key(s).")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoInstances:
    """A COCO-format *instance* set (``instances.json`` + images) as region-annotated images:
    iterating yields :class:`PanopticImage` items whose segments are the annotations (mask
    decoded from the RLE / polygons, XYXY box from the JSON's XYWH ``bbox``; every category is
    a thing).

    Args:
        json_path: the instances JSON.
        image_dir: folder of the images.
        limit: keep only the first ``limit`` images (JSON order).

    Attributes:
        groups: ``{"seen": [...], "held_out": [...]}`` class indices when the categories carry
            a ``held_out`` flag (the shapes world's ``shapes_det``), else ``{}``.

    Raises:
        FileNotFoundError: a missing JSON or image folder.
        ValueError: the JSON is not COCO instances (no ``images``/``annotations``/``categories``).
    """

    def __init__(
        self, json_path: str | os.PathLike, image_dir: str | os.PathLike, limit: int | None = None
    ) -> None:

        self.image_dir = Path(image_dir)
        self.coco = load_coco_instances(json_path)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"Image folder not found: '{self.image_dir}'.")
        data = self.coco.dataset
        cats = sorted(data["categories"], key=lambda c: int(c["id"]))
        self.categories = [PanopticCategory(int(c["id"]), str(c["name"]), True) for c in cats]
        self._cat_index = {c.id: i for i, c in enumerate(self.categories)}
        self.groups: dict[str, list[int]] = {}
        if cats and all("held_out" in c for c in cats):
            self.groups = {
                "seen": [i for i, c in enumerate(cats) if not c["held_out"]],
                "held_out": [i for i, c in enumerate(cats) if c["held_out"]],
            }
        self.image_ids = [int(img["id"]) for img in data["images"]][:limit]

    @property
    def class_names(self) -> list[str]:
        """Category names, used as the prompts."""
        return [c.name for c in self.categories]

    @property
    def isthing(self) -> list[bool]:
        return [True] * len(self.categories)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __iter__(self) -> Iterator[PanopticImage]:
        for image_id in self.image_ids:
            info = self.coco.imgs[image_id]
            segments = []
            for ann in self.coco.imgToAnns.get(image_id, []):
                x, y, w, h = (float(v) for v in ann["bbox"])
                index = self._cat_index[int(ann["category_id"])]
                segments.append(
                    PanopticSegment(
                        id=int(ann["id"]),
                        category_id=int(ann["category_id"]),
                        category_index=index,
                        isthing=True,
                        bbox=(x, y, x + w, y + h),
                        mask=self.coco.annToMask(ann).astype(bool),
                        iscrowd=bool(ann.get("iscrowd", 0)),
                    )
                )
            yield PanopticImage(
                image_id=image_id,
                image_path=self.image_dir / info["file_name"],
                height=int(info["height"]),
                width=int(info["width"]),
                segments=segments,
            )


def load_coco_panoptic(
    json_path: str | os.PathLike,
    png_dir: str | os.PathLike,
    image_dir: str | os.PathLike,
    limit: int | None = None,
    skip_crowd: bool = False,
) -> CocoPanoptic:
    """Open a COCO panoptic set: iterate it for :class:`PanopticImage` items (image path and
    segments with category, thing flag, XYXY box and decoded mask); ``.categories`` lists the
    :class:`PanopticCategory` items. See :class:`CocoPanoptic` for the arguments."""
    return CocoPanoptic(json_path, png_dir, image_dir, limit=limit, skip_crowd=skip_crowd)
