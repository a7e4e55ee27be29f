"""Region heads: RoIAlign box features, mask pooling and the region classifier, by hand."""

import pytest
import torch
import torch.nn.functional as F

from ovdense.modeling.backbones.base import DenseFeatures
from ovdense.modeling.heads import RegionClassifier, box_features, mask_features
from ovdense.modeling.text.encoder import ClassEmbeddings
from ovdense.modeling.text.vocabulary import Vocabulary

S = 8  # stride


def _dense(b: int = 2, d: int = 6, h: int = 4, w: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, d, h, w, generator=g, dtype=torch.float64), dim=1)


@pytest.mark.parametrize("i,j", [(0, 0), (1, 2), (3, 4), (2, 0)])
def test_box_on_one_patch_is_that_patch(i, j):
    dense = _dense()
    box = torch.tensor([[j * S, i * S, (j + 1) * S, (i + 1) * S]], dtype=torch.float64)
    out = box_features(dense, [box, box], stride=S)
    assert out.shape == (2, 6)
    for b in range(2):
        torch.testing.assert_close(out[b], F.normalize(dense[b, :, i, j], dim=0))


def test_box_on_2x2_block_is_mean_of_patches():
    dense = _dense()
    i, j = 1, 2
    box = torch.tensor([[j * S, i * S, (j + 2) * S, (i + 2) * S]], dtype=torch.float64)
    out = box_features(dense, [box[:0], box], stride=S, output_size=2)
    assert out.shape == (1, 6)
    acc = torch.zeros(6, dtype=torch.float64)
    for di in range(2):
        for dj in range(2):
            acc += dense[1, :, i + di, j + dj]
    torch.testing.assert_close(out[0], acc / acc.norm())


def test_box_list_and_batch_index_tensor_agree():
    dense = _dense()
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(7, 2, generator=g) * 30
    wh = torch.rand(7, 2, generator=g) * 15 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    per_image = [boxes[:3], boxes[3:]]
    rois = torch.cat([torch.tensor([0.0] * 3 + [1.0] * 4)[:, None], boxes], dim=1)
    a = box_features(dense, per_image, stride=S, output_size=3)
    b = box_features(dense, rois, stride=S, output_size=3)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(7, dtype=torch.float64))


def test_box_errors():
    dense = _dense()
    box = torch.tensor([[0.0, 0.0, 8.0, 8.0]])
    with pytest.raises(ValueError, match="2 images|batch has 2"):
        box_features(dense, [box], stride=S)
    with pytest.raises(ValueError, match=r"\[K_i, 4\]"):
        box_features(dense, [box, box[:, :3]], stride=S)
    with pytest.raises(ValueError, match=r"\[K, 5\]"):
        box_features(dense, box, stride=S)
    with pytest.raises(ValueError, match="batch indices"):
        box_features(dense, torch.tensor([[2.0, 0, 0, 8, 8]]), stride=S)
    with pytest.raises(ValueError, match="x2 >= x1"):
        box_features(dense, [box, torch.tensor([[8.0, 0, 0, 8]])], stride=S)
    with pytest.raises(ValueError, match=r"\[B, D, h, w\]"):
        box_features(dense[0], [box], stride=S)
    assert box_features(dense, [box[:0], box[:0]], stride=S).shape == (0, 6)


def _loop_pool(dense_b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    d, h, w = dense_b.shape
    acc = torch.zeros(d, dtype=dense_b.dtype)
    total = 0.0
    for i in range(h):
        for j in range(w):
            acc += float(weights[i, j]) * dense_b[:, i, j]
            total += float(weights[i, j])
    v = acc / total
    return v / v.norm()


def test_mask_pooling_with_stride_equals_explicit_weighted_average():
    # 4 x 5 grid, stride 8: image 32 x 40; masks at a non-multiple resolution 30 x 43 (a
    # padding backbone in y, a flooring backbone in x) partially covering patches.
    dense = _dense()
    h, w = 4, 5
    big_h, big_w = 30, 43
    mask = torch.zeros(2, big_h, big_w, dtype=torch.bool)
    mask[0, 3:19, 5:22] = True
    mask[1, 20:, 30:] = True  # covers part of the last (partly padded) row and dropped columns
    soft = torch.rand(1, big_h, big_w, generator=torch.Generator().manual_seed(3))
    out = mask_features(dense, [mask, soft], stride=S)
    assert out.shape == (3, 6)
    for k, (b, m) in enumerate([(0, mask[0]), (0, mask[1]), (1, soft[0])]):
        weights = torch.zeros(h, w, dtype=torch.float64)
        for i in range(h):
            for j in range(w):
                # pixels of patch (i, j) inside the mask; pixels beyond 40 in x are not in any
                # patch, rows beyond 30 are padding (uncovered)
                cell = m[i * S : (i + 1) * S, j * S : (j + 1) * S].double()
                weights[i, j] = cell.sum() / (S * S)
        assert 0 < weights.sum() < h * w
        torch.testing.assert_close(out[k], _loop_pool(dense[b], weights))


def test_mask_pooling_area_interpolation_without_stride():
    dense = _dense(b=1)
    h, w = 4, 5
    big_h, big_w = 30, 43  # non-multiples: adaptive-average-pool bins
    mask = torch.zeros(1, big_h, big_w, dtype=torch.bool)
    mask[0, 2:17, 9:31] = True
    out = mask_features(dense, [mask])
    weights = torch.zeros(h, w, dtype=torch.float64)
    for i in range(h):
        y0, y1 = (i * big_h) // h, -((-(i + 1) * big_h) // h)
        for j in range(w):
            x0, x1 = (j * big_w) // w, -((-(j + 1) * big_w) // w)
            weights[i, j] = mask[0, y0:y1, x0:x1].double().mean()
    torch.testing.assert_close(out[0], _loop_pool(dense[0], weights))
    # exact multiples: the covered fraction of each patch
    mask32 = torch.zeros(1, 32, 40, dtype=torch.bool)
    mask32[0, 4:20, 3:9] = True
    torch.testing.assert_close(
        mask_features(dense, [mask32]), mask_features(dense, [mask32], stride=S)
    )


def test_full_patch_mask_equals_box():
    dense = _dense()
    mask = torch.zeros(1, 32, 40, dtype=torch.bool)
    mask[0, 8:24, 16:32] = True
    box = torch.tensor([[16.0, 8.0, 32.0, 24.0]], dtype=torch.float64)
    torch.testing.assert_close(
        mask_features(dense, [mask[:0], mask], stride=S),
        box_features(dense, [box[:0], box], stride=S, output_size=2),
    )


def test_mask_errors_and_empty_policy():
    dense = _dense()
    full = torch.ones(1, 32, 40)
    empty = torch.zeros(2, 32, 40)
    empty[0, :8, :8] = 1
    with pytest.raises(ValueError, match=r"Mask 2 \(image 1, mask 1\)"):
        mask_features(dense, [full, empty], stride=S)
    out = mask_features(dense, [full, empty], stride=S, empty="zero")
    assert out.shape == (3, 6)
    torch.testing.assert_close(out[2], torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close(out[1], dense[1, :, 0, 0])
    # a mask only over pixels dropped by the flooring grid is empty too
    dropped = torch.zeros(1, 36, 40)
    dropped[0, 33:] = 1
    with pytest.raises(ValueError, match="covers no feature cell"):
        mask_features(dense, [full, dropped], stride=S)
    with pytest.raises(ValueError, match="batch has 2"):
        mask_features(dense, [full])
    with pytest.raises(ValueError, match=r"\[K_i, H, W\]"):
        mask_features(dense, [full, full[0]])
    with pytest.raises(ValueError, match="negative"):
        mask_features(dense, [full, -full])
    with pytest.raises(ValueError, match="empty must be"):
        mask_features(dense, [full, full], empty="skip")  # type: ignore[arg-type]


def _text(d: int = 6, seed: int = 5) -> ClassEmbeddings:
    vocab = Vocabulary(["cat", "sofa, couch", ["tv", "monitor", "screen"]])
    g = torch.Generator().manual_seed(seed)
    embeds = F.normalize(torch.randn(6, d, generator=g, dtype=torch.float64), dim=1)
    return ClassEmbeddings(embeds, torch.tensor([0, 1, 1, 2, 2, 2]), vocab)


def test_region_classifier_logits_probs_by_hand():
    dense = _dense()
    text = _text()
    assert text.num_classes == 3
    boxes = [torch.tensor([[0.0, 0.0, 8.0, 8.0], [8.0, 8.0, 24.0, 16.0]]), torch.zeros(0, 4)]
    out = RegionClassifier()(DenseFeatures(dense, S), text, boxes=boxes, logit_scale=50.0)
    regions = box_features(dense, boxes, stride=S)
    assert set(out) == {"logits", "probs", "labels"}
    assert out["logits"].shape == out["probs"].shape == (2, 3)
    for k in range(2):
        cos = [float(regions[k] @ text.embeds[n]) for n in range(6)]
        names = torch.tensor(cos, dtype=torch.float64) * 50.0
        soft = names.softmax(0)
        groups = [[0], [1, 2], [3, 4, 5]]
        exp_logits = torch.stack([names[g].max() for g in groups])
        exp_probs = torch.stack([soft[g].max() for g in groups])
        torch.testing.assert_close(out["logits"][k], exp_logits)
        torch.testing.assert_close(out["probs"][k], exp_probs)
        assert out["labels"][k] == exp_probs.argmax()
    # first box: one patch -> cosine with the patch feature exactly
    torch.testing.assert_close(
        out["logits"][0, 0], 50.0 * dense[0, :, 0, 0] @ text.embeds[0], check_dtype=False
    )


def test_region_classifier_synonym_max_picks_best_name():
    dense = _dense(b=1)
    text = _text()
    # make name 4 ("monitor") exactly the feature of patch (0, 0): class 2 must win with logit 1
    text.embeds[4] = dense[0, :, 0, 0]
    box = torch.tensor([[0.0, 0.0, 8.0, 8.0]])
    out = RegionClassifier()(DenseFeatures(dense, S), text, boxes=[box], logit_scale=1.0)
    torch.testing.assert_close(out["logits"][0, 2], torch.tensor(1.0, dtype=torch.float64))
    assert out["labels"].tolist() == [2]
    # raw tensors with name_to_class give the same result
    raw = RegionClassifier()(
        dense, text.embeds, boxes=[box], logit_scale=1.0, name_to_class=text.name_to_class, stride=S
    )
    torch.testing.assert_close(raw["logits"], out["logits"])
    torch.testing.assert_close(raw["probs"], out["probs"])
    # default name_to_class: one name per class
    plain = RegionClassifier()(dense, text.embeds, boxes=[box], stride=S, logit_scale=1.0)
    assert plain["logits"].shape == (1, 6)


def test_region_classifier_masks_and_errors():
    dense = _dense()
    text = _text()
    feats = DenseFeatures(dense, S)
    masks = [torch.ones(1, 32, 40), torch.ones(2, 32, 40)]
    clf = RegionClassifier()
    out = clf(feats, text, masks=masks)
    assert out["logits"].shape == (3, 3) and out["labels"].shape == (3,)
    regions = mask_features(dense, masks, stride=S)
    names = 100.0 * regions @ text.embeds.T  # [3, 6]
    expected = torch.stack(
        [names[:, 0], names[:, 1:3].max(1).values, names[:, 3:].max(1).values], dim=1
    )
    torch.testing.assert_close(out["logits"], expected)
    box = [torch.tensor([[0.0, 0.0, 8.0, 8.0]])] * 2
    with pytest.raises(ValueError, match="exactly one"):
        clf(feats, text, boxes=box, masks=masks)
    with pytest.raises(ValueError, match="exactly one"):
        clf(feats, text)
    with pytest.raises(ValueError, match="stride"):
        clf(dense, text, boxes=box)
    with pytest.raises(ValueError, match="different models"):
        clf(feats, text.embeds[:, :5], boxes=box)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        clf(feats, text.embeds[0], boxes=box)
    with pytest.raises(ValueError, match="name_to_class"):
        clf(feats, text.embeds, boxes=box, name_to_class=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[K_i, 4\]"):
        clf(feats, text, boxes=[box[0][:, :2], box[0]])
    with pytest.raises(ValueError, match="covers no feature cell"):
        clf(feats, text, masks=[torch.ones(1, 32, 40), torch.zeros(1, 32, 40)])
    zero = RegionClassifier(empty="zero")(
        feats, text, masks=[torch.ones(1, 32, 40), torch.zeros(1, 32, 40)]
    )
    torch.testing.assert_close(zero["logits"][1], torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="output_size"):
        RegionClassifier(output_size=0)
