"""Mask IoU and greedy mask NMS against brute-force loops."""

import numpy as np
import pytest
import torch

from ovdense.sam import mask_iou, mask_nms


def _random_masks(k: int, h: int = 12, w: int = 10, seed: int = 0) -> np.ndarray:
    """Overlapping rectangles (and one empty mask) so that many IoUs are in (0, 1)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((k, h, w), dtype=bool)
    for i in range(k - 1):
        y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
        masks[i, y0:y1, x0:x1] = True
        masks[i] ^= rng.random((h, w)) < 0.05  # a few flipped pixels
    return masks  # the last one is empty


def _brute_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _brute_nms(masks, scores, thr, labels=None) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        ok = True
        for j in kept:
            if labels is not None and labels[i] != labels[j]:
                continue
            if _brute_iou(masks[i], masks[j]) > thr:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


@pytest.mark.parametrize("block", [1, 3, 64])
def test_mask_iou_matches_brute_force(block):
    masks = _random_masks(9)
    iou = mask_iou(masks, block=block)
    want = np.array([[_brute_iou(a, b) for b in masks] for a in masks], dtype=np.float32)
    np.testing.assert_allclose(iou.numpy(), want, atol=1e-6)
    assert iou[-1, -1] == 0  # empty with empty: 0, not NaN
    other = _random_masks(4, seed=5)
    cross = mask_iou(torch.from_numpy(masks), other, block=block)
    want = np.array([[_brute_iou(a, b) for b in other] for a in masks], dtype=np.float32)
    np.testing.assert_allclose(cross.numpy(), want, atol=1e-6)


def test_mask_iou_groups_zero_other_pairs():
    masks = _random_masks(7)
    groups = np.array([0, 1, 0, 2, 1, 0, 2])
    iou = mask_iou(masks, groups=groups, block=2).numpy()
    full = mask_iou(masks).numpy()
    same = groups[:, None] == groups[None, :]
    np.testing.assert_allclose(iou, np.where(same, full, 0.0), atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thr", [0.0, 0.2, 0.5, 0.9])
def test_mask_nms_matches_brute_force(seed, thr):
    rng = np.random.default_rng(100 + seed)
    masks = _random_masks(14, seed=seed)
    scores = rng.random(14).round(1)  # ties on purpose: broken by index
    labels = rng.integers(0, 3, 14)
    agnostic = mask_nms(masks, scores, thr, block=4).tolist()
    assert agnostic == _brute_nms(masks, scores, thr)
    per_class = mask_nms(masks, torch.from_numpy(scores), thr, labels=labels, block=5).tolist()
    assert per_class == _brute_nms(masks, scores, thr, labels)
    assert len(per_class) >= len(agnostic)


def test_mask_nms_edge_cases():
    m = np.zeros((2, 4, 4), bool)
    m[:, :2] = True
    assert mask_nms(m, [0.5, 0.9], 0.5).tolist() == [1]  # identical: the better one stays
    assert mask_nms(m, [0.5, 0.9], 1.0).tolist() == [1, 0]  # IoU 1 is not above 1
    assert mask_nms(m, [0.5, 0.9], 0.5, labels=[0, 1]).tolist() == [1, 0]  # other classes
    assert mask_nms(np.zeros((0, 4, 4), bool), np.zeros(0), 0.5).tolist() == []
    with pytest.raises(ValueError, match="scores for"):
        mask_nms(m, [0.5], 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mask_nms(m, [0.5, 0.9], 1.5)
    with pytest.raises(ValueError, match=r"\[K, H, W\]"):
        mask_iou(np.zeros((4, 4), bool))
