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


def _inputs(b, hw, k, mask_hw, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 3, *hw, generator=g, dtype=dtype)
    masks = torch.randn(b, k, *mask_hw, generator=g, dtype=dtype)
    return image, masks


@pytest.mark.parametrize(
    "b, hw, k, mask_hw, dil, iters",
    [
        (1, (20, 30), 5, (20, 30), (8, 16), 10),  # NACLIP settings, non-square
        (2, (9, 7), 5, (3, 4), (8, 16), 3),  # H, W smaller than both dilations, B=2
        (1, (5, 4), 3, (5, 4), (16,), 2),  # image smaller than the dilation in both dims
        (1, (33, 17), 4, (11, 6), (1, 2), 5),  # masks at lower resolution
        (2, (16, 16), 6, (16, 16), (1,), 1),
        (2, (24, 40), 7, (6, 10), (2, 3, 5), 4),  # three dilations
        (1, (21, 26), 3, (7, 9), (5, 2), 3),  # dilations not in ascending order
        (1, (1, 1), 2, (1, 1), (8, 16), 2),  # a single pixel
    ],
)
def test_equals_reference(b, hw, k, mask_hw, dil, iters):
    image, masks = _inputs(b, hw, k, mask_hw, seed=sum(hw) + k)
    got = PAMR(iters, dil)(image, masks)
    ref = RefPAMR(iters, list(dil))(image, masks)
    assert got.shape == (b, k, *hw)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_equals_reference_on_softmaxed_scores_with_image_like_values():
    # The NACLIP use: softmaxed class scores at patch resolution, a [0, 1]-ish image.
    torch.manual_seed(3)
    image = torch.rand(2, 3, 48, 64)
    image[:, :, :20, :30] = 0.5  # a flat region: tiny local std, large affinity logits
    masks = torch.softmax(5 * torch.randn(2, 12, 6, 8), dim=1)
    got = PAMR(10, (8, 16), class_chunk=5)(image, masks)
    ref = RefPAMR(10, [8, 16])(image, masks)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_affinity_equals_reference_weights():
    image, _ = _inputs(2, (13, 21), 1, (1, 1), seed=4)
    ref = RefPAMR(1, [2, 5])
    x = -ref.aff_x(image) / (1e-8 + 0.1 * ref.aff_std(image))
    want = F.softmax(x.mean(1, keepdim=True), 2)
    got = PAMR(1, (2, 5)).affinity(image)
    assert got.shape == (2, 1, 16, 13, 21)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.sum(2), torch.ones(2, 1, 13, 21))


def test_float64_matches_reference_tightly():
    image, masks = _inputs(2, (19, 23), 4, (7, 9), seed=5, dtype=torch.float64)
    got = PAMR(10, (8, 16))(image, masks)
    ref = RefPAMR(10, [8, 16]).double()(image, masks)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("chunk", [1, 3, 8, 69, 70, 1000])
def test_chunking_is_exact(chunk):
    image, masks = _inputs(2, (24, 20), 70, (12, 10), seed=6)
    a = PAMR(4, (2, 4), class_chunk=None)(image, masks)
    b = PAMR(4, (2, 4), class_chunk=chunk)(image, masks)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_affinity_neighbour_stacking_is_exact(monkeypatch, dtype):
    # the element-wise work runs on stacks of neighbour maps; their size must not change a bit
    from ovdense.modeling.refiners import pamr as pamr_module

    image, masks = _inputs(2, (19, 23), 4, (7, 9), seed=8, dtype=dtype)
    image = torch.cat([image, image.flip(1)], 1)  # 6 channels: the channel mean sees them all
    want = PAMR(3, (1, 4)).affinity(image)
    outs = [PAMR(3, (1, 4))(image, masks)]
    for limit in (1, 3 * image[:, :1].numel(), 10**9):  # one map per stack, 3, all 18
        monkeypatch.setattr(pamr_module, "_STACK_ELEMENTS", limit)
        assert torch.equal(PAMR(3, (1, 4)).affinity(image), want)
        outs.append(PAMR(3, (1, 4))(image, masks))
    assert all(torch.equal(o, outs[0]) for o in outs)


def test_zero_iterations_is_upsampling():
    masks = torch.randn(2, 3, 4, 5)
    out = PAMR(0, class_chunk=2)(torch.randn(2, 3, 8, 11), masks)
    ref = F.interpolate(masks, size=(8, 11), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    torch.testing.assert_close(out, RefPAMR(0, [8, 16])(torch.randn(2, 3, 8, 11), masks))


def test_constant_image_is_a_neighbour_average():
    # A constant image has zero differences and zero std, so every neighbour gets weight
    # 1 / (8 * len(dilations)): one step is the plain mean of the neighbours (centre excluded).
    torch.manual_seed(7)
    masks = torch.randn(1, 2, 12, 12)
    out = PAMR(1, (1, 3))(torch.full((1, 3, 12, 12), 0.3), masks)
    y, x = 5, 6  # interior for both dilations
    neigh = [
        masks[0, 1, y + d * dy, x + d * dx]
        for d in (1, 3)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if dy or dx
    ]
    assert len(neigh) == 16
    assert out[0, 1, y, x].item() == pytest.approx(sum(v.item() for v in neigh) / 16, abs=1e-6)


def test_constant_image_border_uses_replicate_padding():
    masks = torch.arange(16.0).view(1, 1, 4, 4)
    out = PAMR(1, (1,))(torch.zeros(1, 3, 4, 4), masks)
    # Corner (0, 0): neighbours clamp into the image -> rows/cols {0, 0, 1} x {0, 0, 1}.
    neigh = [masks[0, 0, max(dy, 0), max(dx, 0)] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    neigh.pop(4)  # the centre is not a neighbour
    assert out[0, 0, 0, 0].item() == pytest.approx(sum(v.item() for v in neigh) / 8, abs=1e-6)


def test_one_hot_stays_a_distribution():
    torch.manual_seed(2)
    labels = torch.randint(0, 4, (2, 15, 17))
    onehot = F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    out = PAMR(10, (2, 4), class_chunk=3)(torch.randn(2, 3, 15, 17), onehot)
    torch.testing.assert_close(out.sum(1), torch.ones(2, 15, 17), atol=1e-5, rtol=0)
    assert out.min() >= 0
    assert out.max() <= 1 + 1e-6


def test_sharp_edge_blocks_propagation():
    # Left half black, right half white: the labels should not leak across the edge much.
    image = torch.zeros(1, 3, 16, 32)
    image[..., 16:] = 1.0
    masks = torch.zeros(1, 2, 16, 32)
    masks[:, 0, :, :16] = 1.0
    masks[:, 1, :, 16:] = 1.0
    out = PAMR(10, (1, 2))(image, masks)
    assert out[0, 0, :, :16].min() > 0.99
    assert out[0, 1, :, 16:].min() > 0.99


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_masks(dtype):
    image, masks = _inputs(1, (16, 12), 3, (8, 6), seed=8)
    out = PAMR(5, (2, 4))(image.to(dtype), masks.to(dtype))
    assert out.dtype == dtype
    ref = RefPAMR(5, [2, 4])(image.to(dtype).float(), masks.to(dtype).float())
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), atol=0, rtol=0)


def test_mixed_image_and_mask_dtypes():
    image, masks = _inputs(1, (10, 10), 2, (5, 5), seed=9)
    out = PAMR(3, (1, 2))(image.half(), masks)
    assert out.dtype == torch.float32
    ref = RefPAMR(3, [1, 2])(image.half().float(), masks)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_gradients_match_reference():
    image, masks = _inputs(1, (12, 10), 3, (6, 5), seed=10, dtype=torch.float64)
    m1 = masks.clone().requires_grad_(True)
    m2 = masks.clone().requires_grad_(True)
    w = torch.randn(1, 3, 12, 10, dtype=torch.float64)
    (PAMR(3, (1, 2), class_chunk=2)(image, m1) * w).sum().backward()
    (RefPAMR(3, [1, 2]).double()(image, m2) * w).sum().backward()
    torch.testing.assert_close(m1.grad, m2.grad, atol=1e-10, rtol=1e-10)


def test_image_gradients_match_reference():
    image, masks = _inputs(1, (9, 11), 2, (9, 11), seed=12, dtype=torch.float64)
    i1 = image.clone().requires_grad_(True)
    i2 = image.clone().requires_grad_(True)
    w = torch.randn(1, 2, 9, 11, dtype=torch.float64)
    (PAMR(2, (1, 3))(i1, masks) * w).sum().backward()
    (RefPAMR(2, [1, 3]).double()(i2, masks) * w).sum().backward()
    torch.testing.assert_close(i1.grad, i2.grad, atol=1e-8, rtol=1e-8)


def test_inputs_are_not_modified():
    image, masks = _inputs(1, (8, 8), 3, (8, 8), seed=13)
    image0, masks0 = image.clone(), masks.clone()
    with torch.no_grad():
        out = PAMR(3, (1, 2), class_chunk=2)(image, masks)
    assert out.data_ptr() not in (image.data_ptr(), masks.data_ptr())
    torch.testing.assert_close(image, image0, atol=0, rtol=0)
    torch.testing.assert_close(masks, masks0, atol=0, rtol=0)


def test_empty_vocabulary():
    out = PAMR()(torch.randn(2, 3, 8, 8), torch.randn(2, 0, 4, 4))
    assert out.shape == (2, 0, 8, 8)


def test_module_has_no_state_and_repr():
    pamr = PAMR()
    assert list(pamr.state_dict()) == []
    assert pamr.num_iter == 10 and pamr.dilations == (8, 16) and pamr.class_chunk == 64
    assert "dilations=(8, 16)" in repr(pamr)


@pytest.mark.parametrize(
    "image_shape, mask_shape, match",
    [
        ((3, 8, 8), (1, 2, 8, 8), "image"),
        ((1, 1, 3, 8, 8), (1, 2, 8, 8), "image"),
        ((1, 3, 8, 8), (2, 8, 8), "masks"),
        ((1, 3, 8, 8), (1, 1, 2, 8, 8), "masks"),
        ((2, 3, 8, 8), (1, 2, 8, 8), "Batch sizes"),
    ],
)
def test_forward_validation(image_shape, mask_shape, match):
    with pytest.raises(ValueError, match=match):
        PAMR()(torch.randn(image_shape), torch.randn(mask_shape))


def test_integer_masks_are_rejected():
    with pytest.raises(ValueError, match="floating-point"):
        PAMR()(torch.randn(1, 3, 8, 8), torch.ones(1, 2, 8, 8, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_iter": -1}, "num_iter"),
        ({"num_iter": 1.5}, "num_iter"),
        ({"dilations": ()}, "dilations"),
        ({"dilations": []}, "dilations"),
        ({"dilations": (8, 0)}, "dilations"),
        ({"class_chunk": 0}, "class_chunk"),
    ],
)
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PAMR(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    image, masks = _inputs(2, (40, 56), 9, (10, 14), seed=11)
    cpu = PAMR(10, (8, 16), class_chunk=4)(image, masks.to(dtype)).float()
    gpu = PAMR(10, (8, 16), class_chunk=4)(image.cuda(), masks.to(dtype).cuda())
    assert gpu.dtype == dtype and gpu.device.type == "cuda"
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(gpu.float().cpu(), cpu, atol=tol, rtol=tol)
