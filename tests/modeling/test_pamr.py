"""PAMR against the reference implementation (copied verbatim as the oracle)."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ovdense.modeling.refiners import PAMR


# ---- reference (Araslanov & Roth, 1-stage-wseg), verbatim logic ---------------------------
class LocalAffinity(nn.Module):
    def __init__(self, dilations=(1,)):
        super().__init__()
        self.dilations = dilations
        self.register_buffer("kernel", self._init_aff())

    def _init_aff(self):
        weight = torch.zeros(8, 1, 3, 3)
        for i in range(weight.size(0)):
            weight[i, 0, 1, 1] = 1
        weight[0, 0, 0, 0] = -1
        weight[1, 0, 0, 1] = -1
        weight[2, 0, 0, 2] = -1
        weight[3, 0, 1, 0] = -1
        weight[4, 0, 1, 2] = -1
        weight[5, 0, 2, 0] = -1
        weight[6, 0, 2, 1] = -1
        weight[7, 0, 2, 2] = -1
        return weight

    def forward(self, x):
        B, K, H, W = x.size()
        x = x.view(B * K, 1, H, W)
        x_affs = []
        for d in self.dilations:
            x_pad = F.pad(x, [d] * 4, mode="replicate")
            x_affs.append(F.conv2d(x_pad, self.kernel, dilation=d))
        return torch.cat(x_affs, 1).view(B, K, -1, H, W)


class LocalAffinityCopy(LocalAffinity):
    def _init_aff(self):
        weight = torch.zeros(8, 1, 3, 3)
        weight[0, 0, 0, 0] = 1
        weight[1, 0, 0, 1] = 1
        weight[2, 0, 0, 2] = 1
        weight[3, 0, 1, 0] = 1
        weight[4, 0, 1, 2] = 1
        weight[5, 0, 2, 0] = 1
        weight[6, 0, 2, 1] = 1
        weight[7, 0, 2, 2] = 1
        return weight


class LocalStDev(LocalAffinity):
    def _init_aff(self):
        weight = torch.zeros(9, 1, 3, 3)
        for i, (a, b) in enumerate([(a, b) for a in range(3) for b in range(3)]):
            weight[i, 0, a, b] = 1
        return weight

    def forward(self, x):
        return super().forward(x).std(2, keepdim=True)


class LocalAffinityAbs(LocalAffinity):
    def forward(self, x):
        return torch.abs(super().forward(x))


class RefPAMR(nn.Module):
    def __init__(self, num_iter=1, dilations=(1,)):
        super().__init__()
        self.num_iter = num_iter
        self.aff_x = LocalAffinityAbs(dilations)
        self.aff_m = LocalAffinityCopy(dilations)
        self.aff_std = LocalStDev(dilations)

    def forward(self, x, mask):
        mask = F.interpolate(mask, size=x.size()[-2:], mode="bilinear", align_corners=True)
        x_std = self.aff_std(x)
        x = -self.aff_x(x) / (1e-8 + 0.1 * x_std)
        x = x.mean(1, keepdim=True)
        x = F.softmax(x, 2)
        for _ in range(self.num_iter):
            m = self.aff_m(mask)
            mask = (m * x).sum(2)
        return mask


# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "b, hw, mask_hw, dil, iters",
    [
        (1, (20, 30), (20, 30), (8, 16), 10),
        (2, (9, 7), (3, 4), (8, 16), 3),
        (1, (33, 17), (11, 6), (1, 2), 5),
        (2, (16, 16), (16, 16), (1,), 1),
    ],
)
def test_equals_reference(b, hw, mask_hw, dil, iters):
    torch.manual_seed(0)
    image = torch.randn(b, 3, *hw)
    masks = torch.randn(b, 5, *mask_hw)
    got = PAMR(iters, dil)(image, masks)
    ref = RefPAMR(iters, dil)(image, masks)
    assert got.shape == (b, 5, *hw)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_chunking_is_exact():
    torch.manual_seed(1)
    image, masks = torch.randn(1, 3, 24, 24), torch.randn(1, 70, 24, 24)
    a = PAMR(4, (2, 4), class_chunk=None)(image, masks)
    b = PAMR(4, (2, 4), class_chunk=8)(image, masks)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_zero_iterations_is_upsampling():
    masks = torch.randn(1, 2, 4, 5)
    out = PAMR(0)(torch.randn(1, 3, 8, 10), masks)
    ref = F.interpolate(masks, size=(8, 10), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out, ref)


def test_constant_image_is_a_neighbour_average():
    masks = torch.randn(1, 1, 10, 10)
    out = PAMR(1, (1,))(torch.ones(1, 3, 10, 10), masks)
    y, x = 4, 6
    neigh = [masks[0, 0, y + dy, x + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    assert out[0, 0, y, x].item() == pytest.approx(torch.stack(neigh).mean().item(), abs=1e-6)


def test_one_hot_stays_a_distribution():
    torch.manual_seed(2)
    labels = torch.randint(0, 4, (1, 15, 15))
    onehot = F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    out = PAMR(10, (2, 4))(torch.randn(1, 3, 15, 15), onehot)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 15, 15), atol=1e-5, rtol=0)
    assert out.min() >= 0


def test_half_precision_masks_and_errors():
    image, masks = torch.randn(1, 3, 8, 8), torch.randn(1, 2, 8, 8)
    out = PAMR(2, (1,))(image, masks.bfloat16())
    assert out.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="Batch sizes"):
        PAMR()(torch.randn(2, 3, 8, 8), masks)
    with pytest.raises(ValueError, match="num_iter"):
        PAMR(-1)
    with pytest.raises(ValueError, match="dilations"):
        PAMR(1, ())
