"""Evaluations in the shapes world (:mod:`ovdense.data.synthetic`), seen vs held-out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.synthetic import class_groups, class_names, generate_scene
from .zero_shot import accuracy_by_group, zero_shot_logits

__all__ = ["shapes_zero_shot"]

#: Offset of the zero-shot scenes' indices, so they are not the val segmentation scenes.
_ZERO_SHOT_OFFSET = 10_000_000


@torch.no_grad()
def shapes_zero_shot(
    clip: nn.Module,
    num_images: int = 3000,
    seed: int = 0,
    size: int = 64,
    templates: str = "shapes",
) -> dict[str, Any]:
    """Image-level zero-shot accuracy on single-object ``val`` scenes of the shapes world.

    Each image holds one object of a uniformly drawn composition (held-out ones included); the
    classes are the 30 compositions (no background), so chance is 1/30.

    Returns:
        ``{"all"|"seen"|"held_out": {"acc": %, "n": images}, "chance": %, "num_classes": 30}``.
    """
    scenes = [
        generate_scene(seed, _ZERO_SHOT_OFFSET + i, size, "val", max_objects=1)
        for i in range(num_images)
    ]
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2)
    target = torch.tensor([int(s.labels[0]) - 1 for s in scenes])  # 0-based, no background
    names = class_names()[1:]
    logits = zero_shot_logits(clip, images.float() / 255.0, names, templates=templates)
    groups = {k: [c - 1 for c in v] for k, v in class_groups().items()}
    result: dict[str, Any] = accuracy_by_group(logits.argmax(1).cpu(), target, groups)
    result["chance"] = 100.0 / len(names)
    result["num_classes"] = len(names)
    return result
