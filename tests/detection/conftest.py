"""A small COCO-format detection set (the shapes world at 64 px) with the awkward cases added:
an image without annotations, a degenerate box, a category id no vocabulary has."""

from __future__ import annotations

import json
import shutil

import pytest

from ovdense.data import synthetic


@pytest.fixture(scope="session")
def det_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("det_set")
    synthetic.write_shapes_det(root, num_images=6, seed=3, size=64)
    data = json.loads((root / "instances.json").read_text())
    first = data["images"][0]
    shutil.copy(root / "images" / first["file_name"], root / "images" / "empty.png")
    data["images"].append({**first, "id": 100, "file_name": "empty.png"})
    ann = dict(data["annotations"][0])
    data["annotations"] += [
        {**ann, "id": 1000, "bbox": [5.0, 5.0, 0.5, 10.0]},  # degenerate: under 1 px wide
        {**ann, "id": 1001, "bbox": [70.0, 70.0, 5.0, 5.0]},  # outside the 64 px image
        {**ann, "id": 1002, "category_id": 99},  # a category no vocabulary has
    ]
    (root / "instances.json").write_text(json.dumps(data))
    return root
