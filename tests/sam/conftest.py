"""Fixtures of the SAM tests: the bundled shapes-world segmentor, a shapes scene, a tiny SAM."""

import pytest
import torch
from sam_common import OBJECTS


@pytest.fixture(scope="session")
def shapes_segmentor():
    """``shapes/maskclip``: the bundled tiny CLIP trained on the shapes world (offline)."""
    from ovdense import build_segmentor

    return build_segmentor("shapes/maskclip", device="cpu")


@pytest.fixture(scope="session")
def scene():
    """128 px scene 0 of world 0 with a red circle, a blue square and a green triangle."""
    from ovdense.data.synthetic import generate_scene

    return generate_scene(0, 0, size=128, objects=OBJECTS)


@pytest.fixture(scope="session")
def small_sam():
    """A tiny random SAM (segment-anything's modules, 128 px input)."""
    from ovdense.sam import tiny_sam

    with torch.no_grad():
        return tiny_sam(seed=0, img_size=128)
