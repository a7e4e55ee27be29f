"""The shapes world (ovdense.data.synthetic): determinism, scene consistency, written sets."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from ovdense.data import synthetic
from ovdense.data.synthetic import (
    COLOURS,
    HELD_OUT,
    SHAPES,
    ShapesCaptionDataset,
    class_groups,
    class_names,
    generate_scene,
    write_shapes_det,
    write_shapes_seg,
)

HELD_NAMES = {f"{c} {s}" for c, s in HELD_OUT}


def _assert_scenes_equal(a, b):
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.caption == b.caption
    assert a.background == b.background


def _box_of(mask: np.ndarray) -> list[float]:
    """x0, y0, x1, y1 (x1/y1 exclusive) by scanning rows and columns."""
    rows = [y for y in range(mask.shape[0]) if mask[y].any()]
    cols = [x for x in range(mask.shape[1]) if mask[:, x].any()]
    return [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


# --------------------------------------------------------------------------------------------
# Names and groups
# --------------------------------------------------------------------------------------------


def test_class_names_order():
    names = class_names()
    assert len(names) == 1 + len(COLOURS) * len(SHAPES) == 31
    assert names[0] == "background"
    expected = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    assert names[1:] == expected
    assert names[1] == "red circle" and names[2] == "red square"
    assert len(set(names)) == len(names)


def test_class_groups_partition_matches_held_out():
    groups = class_groups()
    assert set(groups) == {"seen", "held_out"}
    seen, held = set(groups["seen"]), set(groups["held_out"])
    assert not seen & held
    assert seen | held == set(range(1, 31))
    names = class_names()
    assert {names[i] for i in held} == HELD_NAMES
    assert len(held) == len(HELD_OUT) == 6
    # every colour and every shape word stays in some seen composition
    seen_names = [names[i] for i in seen]
    for c in COLOURS:
        assert any(n.startswith(c + " ") for n in seen_names)
    for s in SHAPES:
        assert any(n.endswith(" " + s) for n in seen_names)


# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "val"])
def test_generate_scene_is_deterministic(split):
    for index in (0, 7):
        _assert_scenes_equal(
            generate_scene(3, index, 64, split), generate_scene(3, index, 64, split)
        )


def test_generate_scene_differs_between_seeds_indices_splits():
    base = generate_scene(0, 0, 64, "train")
    for other in (
        generate_scene(1, 0, 64, "train"),
        generate_scene(0, 1, 64, "train"),
        generate_scene(0, 0, 64, "val"),
    ):
        assert not np.array_equal(base.image, other.image)
    # many scenes: images pairwise different
    images = [generate_scene(5, i, 32, "val").image.tobytes() for i in range(20)]
    assert len(set(images)) == 20


def test_global_rng_untouched():
    np.random.seed(123)
    torch.manual_seed(123)
    before_np, before_t = np.random.rand(), torch.rand(1)
    np.random.seed(123)
    torch.manual_seed(123)
    generate_scene(0, 0, 32)
    assert np.random.rand() == before_np
    assert torch.equal(torch.rand(1), before_t)


def test_caption_dataset_items():
    ds = ShapesCaptionDataset(5, seed=2, size=48, split="val", max_objects=3)
    assert len(ds) == 5
    for i in (0, 4):
        item = ds[i]
        scene = generate_scene(2, i, 48, "val", 3)
        assert item["index"] == i
        assert item["caption"] == scene.caption
        assert item["image"].dtype == torch.float32
        assert item["image"].shape == (3, 48, 48)
        expected = torch.from_numpy(scene.image.astype(np.float32) / 255.0).permute(2, 0, 1)
        torch.testing.assert_close(item["image"], expected, rtol=0, atol=1e-7)
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(IndexError):
        ds[-1]
    with pytest.raises(ValueError):
        ShapesCaptionDataset(0)


# --------------------------------------------------------------------------------------------
# Consistency of every scene
# --------------------------------------------------------------------------------------------


def _check_scene(scene, size):
    names = class_names()
    k = len(scene.labels)
    assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
    assert scene.label.shape == (size, size) and scene.label.dtype == np.int64
    assert scene.masks.shape == (k, size, size) and scene.masks.dtype == bool
    assert scene.boxes.shape == (k, 4) and scene.boxes.dtype == np.float32
    assert 1 <= k <= 5
    assert scene.labels.min() >= 1 and scene.labels.max() <= 30
    # disjoint, non-empty masks
    assert scene.masks.sum(0).max() <= 1
    assert scene.masks.reshape(k, -1).any(1).all()
    # label = composition of the masks
    composed = np.zeros((size, size), np.int64)
    for m, c in zip(scene.masks, scene.labels):
        composed[m] = c
    np.testing.assert_array_equal(scene.label, composed)
    assert ((scene.label == 0) == ~scene.masks.any(0)).all()
    # boxes: extent of each visible mask
    for m, box in zip(scene.masks, scene.boxes):
        assert box.tolist() == _box_of(m)
    # caption names exactly the classes present, each once, with the right article
    present = {names[c] for c in scene.labels}
    for name in names[1:]:
        assert (name in scene.caption) == (name in present), (name, scene.caption)
    for name in present:
        assert scene.caption.count(name) == 1
        article = "an" if name[0] in "aeiou" else "a"
        assert re.search(rf"(^|\s){article} {name}\b", scene.caption), (name, scene.caption)
    assert scene.background in synthetic.BACKGROUNDS
    assert scene.caption.endswith(".")


@pytest.mark.parametrize("size", [64, 96])
@pytest.mark.parametrize("split", ["train", "val"])
def test_scenes_are_consistent(size, split):
    for i in range(50):
        _check_scene(generate_scene(11, i, size, split), size)


def test_objects_keep_sixty_percent_visible(monkeypatch):
    """Record every drawn full shape; each visible mask is its accepted shape minus the pixels
    of later objects, and keeps >= 60 % of that shape's area."""
    drawn = []
    original = synthetic._shape_mask

    def recording(*args, **kwargs):
        mask = original(*args, **kwargs)
        drawn.append(mask)
        return mask

    monkeypatch.setattr(synthetic, "_shape_mask", recording)
    checked = occluded = 0
    for i in range(40):
        drawn.clear()
        scene = generate_scene(6, i, 64, "val")
        for k, visible in enumerate(scene.masks):
            later = scene.masks[k + 1 :].any(0) if k + 1 < len(scene.masks) else visible & False
            candidates = [
                full
                for full in drawn
                if (full | visible).sum() == full.sum() and not (full & ~visible & ~later).any()
            ]
            assert candidates, (i, k)
            for full in candidates:
                assert visible.sum() >= 0.6 * full.sum(), (i, k)
                checked += 1
                occluded += int(visible.sum() < full.sum())
    assert checked > 60 and occluded > 5  # occlusion does happen


def test_objects_are_coloured_like_their_class():
    """Each visible mask's median colour is closest to its class colour (jitter is small)."""
    names = class_names()
    palette = np.array(list(COLOURS.values()), np.float64)
    for i in range(15):
        scene = generate_scene(4, i, 64, "val")
        for m, c in zip(scene.masks, scene.labels):
            median = np.median(scene.image[m].astype(np.float64), axis=0)
            nearest = list(COLOURS)[int(np.argmin(((palette - median) ** 2).sum(1)))]
            assert nearest == names[c].split(" ")[0]


def test_max_objects_and_size_respected():
    for i in range(20):
        scene = generate_scene(0, i, 32, "val", max_objects=2)
        assert 1 <= len(scene.labels) <= 2
        assert scene.image.shape == (32, 32, 3)
    counts = {len(generate_scene(0, i, 64, "val").labels) for i in range(40)}
    assert len(counts) >= 3  # the number of objects varies


def test_train_split_never_draws_held_out():
    names = class_names()
    train = set()
    for i in range(300):
        train.update(names[c] for c in generate_scene(0, i, 16, "train", max_objects=5).labels)
    assert not train & HELD_NAMES
    assert len(train) == 24  # every seen composition shows up in 300 scenes
    val = set()
    for i in range(100):
        val.update(names[c] for c in generate_scene(0, i, 16, "val").labels)
    assert val & HELD_NAMES


# --------------------------------------------------------------------------------------------
# Chosen objects and errors
# --------------------------------------------------------------------------------------------


def test_objects_drawn_exactly():
    names = class_names()
    for i in range(5):
        scene = generate_scene(0, i, 64, "val", objects=["red circle", "blue square"])
        assert [names[c] for c in scene.labels] == ["red circle", "blue square"]
        _check_scene(scene, 64)
    # held-out compositions can be asked for even in the train split
    scene = generate_scene(0, 0, 64, "train", objects=["red star"])
    assert [names[c] for c in scene.labels] == ["red star"]


def test_errors():
    with pytest.raises(ValueError, match="Unknown shapes-world objects") as err:
        generate_scene(0, 0, 64, objects=["red circle", "pink square"])
    assert "pink square" in str(err.value) and "orange cross" in str(err.value)
    with pytest.raises(ValueError):
        generate_scene(0, 0, 64, objects=[])
    with pytest.raises(ValueError, match="split"):
        generate_scene(0, 0, 64, split="test")
    with pytest.raises(ValueError, match="size"):
        generate_scene(0, 0, 15)
    with pytest.raises(ValueError, match="max_objects"):
        generate_scene(0, 0, 64, max_objects=0)


# --------------------------------------------------------------------------------------------
# Written validation sets
# --------------------------------------------------------------------------------------------


def test_write_shapes_seg(tmp_path):
    write_shapes_seg(tmp_path, num_images=4, size=64)
    assert (tmp_path / "classes.txt").read_text().splitlines() == class_names()
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        f"{i:05d}.png" for i in range(4)
    ]
    for i in range(4):
        scene = generate_scene(synthetic.VAL_SEED, i, 64, "val")
        label = np.array(Image.open(tmp_path / "labels" / f"{i:05d}.png"))
        image = np.array(Image.open(tmp_path / "images" / f"{i:05d}.png"))
        np.testing.assert_array_equal(label, scene.label)
        np.testing.assert_array_equal(image, scene.image)


def test_write_shapes_det(tmp_path):
    from pycocotools.coco import COCO

    write_shapes_det(tmp_path, num_images=4, size=64)
    data = json.loads((tmp_path / "instances.json").read_text())
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    names = class_names()
    cats = {c["id"]: c for c in data["categories"]}
    assert sorted(cats) == list(range(1, 31))
    for cid, cat in cats.items():
        assert cat["name"] == names[cid]
        assert cat["held_out"] == (names[cid] in HELD_NAMES)
    assert len(data["images"]) == 4
    ann_ids = [a["id"] for a in data["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids)
    total = 0
    for i, img in enumerate(data["images"]):
        scene = generate_scene(synthetic.VAL_SEED, i, 64, "val")
        assert (img["height"], img["width"]) == (64, 64)
        image = np.array(Image.open(tmp_path / "images" / img["file_name"]))
        np.testing.assert_array_equal(image, scene.image)
        anns = coco.imgToAnns[img["id"]]
        assert len(anns) == len(scene.labels)
        total += len(anns)
        for ann, mask, box, cls in zip(anns, scene.masks, scene.boxes, scene.labels):
            assert ann["category_id"] == int(cls)
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
            x0, y0, x1, y1 = _box_of(mask)
            assert box.tolist() == [x0, y0, x1, y1]
            assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert ann["area"] == int(mask.sum())
            assert ann["iscrowd"] == 0
    assert total == len(data["annotations"])


# --------------------------------------------------------------------------------------------
# tools/make_shapes_scene.py
# --------------------------------------------------------------------------------------------


def test_make_scene_cli(tmp_path, capsys):
    from ovdense.data.synthetic import main

    out, lab = tmp_path / "sub" / "scene.png", tmp_path / "label.png"
    rc = main(
        ["--output", str(out), "--label", str(lab), "--objects", "red circle, blue square"]
        + ["--size", "64", "--seed", "2", "--index", "3"]
    )
    assert rc == 0
    scene = generate_scene(2, 3, 64, "val", objects=["red circle", "blue square"])
    np.testing.assert_array_equal(np.array(Image.open(out)), scene.image)
    np.testing.assert_array_equal(np.array(Image.open(lab)), scene.label)
    assert set(np.unique(scene.label)) == {0, 1, 12}
    assert capsys.readouterr().out.strip() == scene.caption

    bad = tmp_path / "bad.png"
    assert main(["--output", str(bad), "--objects", "red circle,pink blob"]) == 2
    assert not bad.exists()
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "pink blob" in err and "\n" not in err


def test_objects_that_cannot_fit_raise():
    with pytest.raises(ValueError, match="Could not place"):
        generate_scene(0, 0, 16, "val", objects=class_names()[1:] * 2)
