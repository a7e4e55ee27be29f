"""The text-embedding box classifier mounted on a plain torchvision Faster R-CNN with a tiny
ResNet (no CLIP): it trains with torchvision's own losses, and at test time detects a class by
name that was not among its training labels.

The toy world: squares of saturated colours on black. The "text encoder" knows colours: the
embedding of a colour word is the direction of its hue on the colour circle (``[cos h, sin h,
0]``). The detector is trained on red, yellow, green, cyan, blue and magenta, then asked for
"orange" (hue 30, never a training label) among all seven names.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
from det_threads import one_thread
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.resnet import BasicBlock
from torchvision.ops import MultiScaleRoIAlign, box_iou

from ovdense.modeling.detection import TextBoxPredictor

HUE = {"red": 0, "orange": 30, "yellow": 60, "green": 120, "cyan": 180, "blue": 240, "magenta": 300}
NOVEL = "orange"
TRAIN = [n for n in HUE if n != NOVEL]


def embed(names):
    """The toy text encoder: ``[K, 3]`` hue directions."""
    rad = [math.radians(HUE[n]) for n in names]
    return torch.tensor([[math.cos(r), math.sin(r), 0.0] for r in rad])


def scene(rng, names):
    img = torch.zeros(3, 64, 64)
    boxes = []
    for k, n in enumerate(names):
        r = int(rng.integers(7, 11))
        cx, cy = 16 + 32 * k + int(rng.integers(-4, 5)), 32 + int(rng.integers(-12, 13))
        rgb = torch.tensor(colorsys.hsv_to_rgb(HUE[n] / 360, 1, 1))
        img[:, cy - r : cy + r, cx - r : cx + r] = rgb[:, None, None] * 0.9 + 0.05
        boxes.append([cx - r, cy - r, cx + r, cy + r])
    return img, torch.tensor(boxes, dtype=torch.float32)


class TinyResNet(nn.Sequential):
    """Two stride-2 stages with a residual block each: ``[B, 3, H, W] -> [B, 32, H/4, W/4]``."""

    def __init__(self) -> None:
        def down(i: int, o: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(i, o, 3, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

        super().__init__(down(3, 16), BasicBlock(16, 16), down(16, 32), BasicBlock(32, 32))
        self.out_channels = 32


def build_detector() -> FasterRCNN:
    torch.manual_seed(0)
    return FasterRCNN(
        TinyResNet(),
        num_classes=None,
        rpn_anchor_generator=AnchorGenerator(((16, 24),), ((1.0,),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(32 * 49, 128),
        box_predictor=TextBoxPredictor(128, embed_dim=3),  # the only ovdense part
        min_size=64,
        max_size=64,
        box_score_thresh=0.01,
        rpn_batch_size_per_image=64,
        box_batch_size_per_image=64,
    )


def train(model: FasterRCNN, steps: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    model.roi_heads.box_predictor.set_vocabulary(embed(TRAIN))  # labels 1..K index TRAIN
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    with one_thread():
        return _train_steps(model, opt, rng, steps, losses)


def _train_steps(model, opt, rng, steps, losses):
    for _ in range(steps):
        images, targets = [], []
        for _ in range(4):
            names = list(rng.choice(TRAIN, 2))
            img, boxes = scene(rng, names)
            images.append(img)
            labels = torch.tensor([TRAIN.index(n) + 1 for n in names])
            targets.append({"boxes": boxes, "labels": labels})
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_mounts_trains_and_swaps_vocabulary():
    model = build_detector()
    losses = train(model, 12)
    assert sum(losses[-3:]) < sum(losses[:3])
    model.eval()
    img, _ = scene(np.random.default_rng(1), ["red", "blue"])
    names = list(HUE)
    with torch.no_grad(), model.roi_heads.box_predictor.vocabulary(embed(names)):
        out = model([img])[0]
    assert out["labels"].numel() == 0 or int(out["labels"].max()) <= len(names)


@pytest.mark.slow
def test_detects_a_class_by_name_not_in_its_training_labels():
    model = build_detector()
    train(model, 200)
    model.eval()
    names = list(HUE)  # the novel name among all the trained ones
    rng = np.random.default_rng(123)
    hits = 0
    for _ in range(10):
        img, boxes = scene(rng, [NOVEL, str(rng.choice(TRAIN))])
        with torch.no_grad(), model.roi_heads.box_predictor.vocabulary(embed(names)):
            out = model([img])[0]
        on_it = box_iou(out["boxes"], boxes[:1])[:, 0] > 0.5
        if on_it.any():
            best = out["labels"][on_it][0]  # detections come sorted by score
            hits += names[int(best) - 1] == NOVEL
    assert hits >= 8, hits
