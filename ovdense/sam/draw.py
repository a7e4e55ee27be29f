"""Drawing open-vocabulary instances: class colours, outlines, ``name score`` labels.

:func:`draw_instances` blends each instance's class colour on the image (the best-scored
instance on top where masks overlap), traces every instance's outline (OpenCV contours) in its
class colour and writes ``name 0.87`` at the top-left of its box. Colours are stable per class
name (:func:`ovdense.utils.labels.palette_for`, shared with the semantic overlays and label
PNGs); the legend panel and the enlargement of small images are those of
:func:`ovdense.utils.visualizer.overlay`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..utils.labels import palette_for
from ..utils.visualizer import UPSCALE_MIN_SIDE, _drawable, _load_font, _upscale_small, overlay
from .instances import Instances

__all__ = ["draw_instances"]


def _text_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``rgb``."""
    r, g, b = rgb
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def draw_instances(
    image: np.ndarray,
    instances: Instances,
    alpha: float = 0.5,
    legend: bool = True,
    *,
    outline: bool = True,
    text: bool = True,
    min_side: int = UPSCALE_MIN_SIDE,
) -> np.ndarray:
    """An overlay of instances on an image.

    Args:
        image: ``[H, W, 3]`` uint8 RGB, the size of ``instances.masks``.
        instances: the instances to draw.
        alpha: opacity of the class colours in ``[0, 1]``.
        legend: add the legend panel of the classes present (as the semantic overlay does);
            the image is then enlarged by a whole factor when its short side is below
            ``min_side``.
        outline: trace each instance's contour.
        text: write each instance's ``name score`` at its box.
        min_side: see :func:`ovdense.utils.visualizer.overlay`.

    Returns:
        ``uint8`` RGB: ``[sH, sW, 3]`` without a legend (``s = 1``), wider with one.
    """
    import cv2

    labels = instances.label_map(fill=-1)
    if labels.shape != image.shape[:2]:
        raise ValueError(
            f"The instances are {labels.shape} but the image is {image.shape[:2]}: draw them on "
            "the image they were predicted on."
        )
    factor = 1
    img = image
    if legend and len(instances):
        img, big = _upscale_small(image, labels, int(min_side))
        factor = big.shape[0] // labels.shape[0]
        labels = big
    out = overlay(img, labels, instances.classes, alpha=alpha, legend=legend, min_side=0)
    if not len(instances) or not (outline or text):
        return out
    palette = palette_for(instances.classes)
    height, width = labels.shape
    view = np.ascontiguousarray(out[:height, :width])
    thickness = max(1, round(min(height, width) / 300))
    order = np.argsort(instances.scores, kind="stable")  # best last: drawn on top
    if outline:
        for k in order:
            contours, _ = cv2.findContours(
                instances.masks[k].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            if factor > 1:
                contours = tuple(
                    (c * factor + (factor - 1) // 2).astype(np.int32) for c in contours
                )
            colour = tuple(int(v) for v in palette[int(instances.labels[k])])
            cv2.drawContours(view, list(contours), -1, colour, thickness, cv2.LINE_8)
    if text:
        pil = Image.fromarray(view)
        draw = ImageDraw.Draw(pil)
        size = int(np.clip(round(min(height, width) / 28), 10, 22))
        font = _load_font(size, None)
        for k in order:
            label = int(instances.labels[k])
            r, g, b = (int(v) for v in palette[label])
            caption = _drawable(f"{instances.classes[label]} {instances.scores[k]:.2f}", font)
            x = int(instances.boxes[k, 0]) * factor
            y = int(instances.boxes[k, 1]) * factor
            left, top, right, bottom = draw.textbbox((x, y), caption, font=font)
            pad = 1
            shift_x = max(0, right + pad - width)  # keep the caption inside the image
            box = (left - shift_x - pad, top - pad, right - shift_x + pad, bottom + pad)
            draw.rectangle(box, fill=(r, g, b))
            draw.text((x - shift_x, y), caption, font=font, fill=_text_colour((r, g, b)))
        view = np.asarray(pil)
    out[:height, :width] = view
    return out
