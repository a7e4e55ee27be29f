"""The captions of the tiny CLIP's stage 2 (``configs/train/tiny_clip_shapes_background.py``):
object-free scenes and captions that name the background."""

import re

import numpy as np
import pytest
import torch

from ovdense.data.synthetic import (
    BACKGROUNDS,
    ShapesCaptionDataset,
    class_names,
    generate_background,
    generate_scene,
)

_KINDS = "noisy|gradient|striped|checkered"


def test_defaults_keep_the_scene_captions():
    ds = ShapesCaptionDataset(6, seed=3, size=32)
    for i in range(6):
        assert ds[i]["caption"] == generate_scene(3, i, 32).caption


def test_generate_background_is_deterministic_and_object_free():
    a, cap = generate_background(0, 5, 32)
    b, cap2 = generate_background(0, 5, 32)
    assert np.array_equal(a, b) and cap == cap2
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert re.fullmatch(rf"(a photo of )?a ((?:{_KINDS}) )?background\.", cap), cap
    assert not any(n in cap for n in class_names()[1:])
    with pytest.raises(ValueError, match="size"):
        generate_background(0, 0, 8)


def test_stage2_items():
    ds = ShapesCaptionDataset(400, seed=2, size=32, empty_fraction=0.15,
                              background_caption_fraction=0.5)  # fmt: skip
    empty = named = 0
    names = class_names()[1:]
    for i in range(len(ds)):
        item = ds[i]
        cap = item["caption"]
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
        if not any(n in cap for n in names):
            empty += 1
            image, expected = generate_background(2, i, 32)
            assert cap == expected
            torch.testing.assert_close(
                item["image"], torch.from_numpy(image).permute(2, 0, 1).float() / 255
            )
            continue
        scene = generate_scene(2, i, 32)
        torch.testing.assert_close(
            item["image"], torch.from_numpy(scene.image).permute(2, 0, 1).float() / 255
        )
        for c in set(scene.labels.tolist()):  # every object named once
            assert cap.count(class_names()[c]) == 1, cap
        if cap.endswith(" background."):
            named += 1
            kind = cap.rsplit(" ", 2)[-2]
            assert BACKGROUNDS[list("noisy gradient striped checkered".split()).index(kind)] == (
                scene.background
            )
    assert 0.08 < empty / len(ds) < 0.22
    assert 0.35 < named / (len(ds) - empty) < 0.65
    assert ds[7]["caption"] == ds[7]["caption"]


def test_fraction_checks():
    with pytest.raises(ValueError, match="empty_fraction"):
        ShapesCaptionDataset(2, empty_fraction=1.5)
    with pytest.raises(ValueError, match="background_caption_fraction"):
        ShapesCaptionDataset(2, background_caption_fraction=-0.1)


def test_stage2_config_builds_on_stage1():
    from ovdense.engine import load_train_config

    cfg = load_train_config("configs/train/tiny_clip_shapes_background.py", [], None)
    assert cfg.model.clip.checkpoint == "output/tiny_clip_shapes/ovdense-tiny-vit_shapes.pt"
    assert cfg.dataloader.dataset.empty_fraction == 0.15
    assert cfg.dataloader.dataset.background_caption_fraction == 0.5
    assert cfg.dataloader.dataset.seed == 2
    assert cfg.train.max_iter == cfg.lr_scheduler.max_iter == 500
    assert cfg.train.output_dir == "output/tiny_clip_shapes_background"
    stage1 = load_train_config("configs/train/tiny_clip_shapes.py", [], None)
    assert stage1.train.max_iter == 2000 and stage1.dataloader.dataset.seed == 0
    assert "empty_fraction" not in stage1.dataloader.dataset
