"""F-ViT's released checkpoints: a detector written in the official format (tiny random weights,
official key names, mmcv's ``{"meta", "state_dict"}``) loads back with ``load_fvit`` and gives
the same detections (and masks); the mmdet-compatible ops agree with independent formulas;
mismatched files give one-sentence errors naming the expected format.

(Parity with the official code itself: ``tools/parity_fvit.py``, figures in
``docs/parity_fvit.md``.)"""

from __future__ import annotations

import math

import pytest
import torch
from det_threads import one_thread
from tiny_eva import MODEL_NAME, make_eva

from ovdense.modeling.convert.fvit import (
    FVIT_PRESETS,
    coco_ov_classes_coco_order,
    detect_fvit_preset,
    export_fvit_state_dict,
    load_fvit,
    preset_with,
)
from ovdense.modeling.detection import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LevelRoIAlign,
    MMDetAnchorGenerator,
    MMDetBoxCoder,
    build_fvit,
    paste_masks_mmdet,
)
from ovdense.utils.weights import CheckpointFormatError

K = 5


def _tiny_detector(mask: bool, learn_bg: bool, seed: int = 0):
    clip = make_eva(seed)
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(K, 32, generator=g), dim=-1)
    bg = torch.nn.functional.normalize(torch.randn(32, generator=g), dim=0)
    det = build_fvit(
        clip.visual,
        [f"c{i}" for i in range(K)],
        out_indices=(0, 1, 2, 2),
        pyramid_channels=16,
        min_size=64,
        max_size=64,
        box_convs=2,
        box_conv_dim=16,
        box_fc_dim=32,
        mmdet_ops=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        train_class_embeds=emb,
        background_embed=bg,
        rpn_norm=mask,
        mask_head=mask,
        mask_convs=2,
        learn_background=learn_bg,
        rpn_pre_nms_top_n=(2000, 2000),
        score_thresh=1e-4 if mask else 0.01,
        nms_thresh=0.5 if mask else 0.4,
        detections_per_img=300 if mask else 100,
        clip_temperature=50.0 if mask else 75.0,
        beta=0.6 if mask else 0.8,
    )
    with torch.no_grad():  # spread every non-tower tensor, BN statistics too
        for n, p in det.named_parameters():
            if not n.startswith("backbone"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        for n, b in det.named_buffers():
            if n.endswith("running_var"):
                b.uniform_(0.5, 1.5, generator=g)
            elif n.endswith("running_mean"):
                b.normal_(0.0, 0.1, generator=g)
    return det.eval(), emb


def _preset(name: str):
    return preset_with(
        name,
        clip_model=MODEL_NAME,
        width=64,
        patch=8,
        depth=3,
        out_indices=(0, 1, 2, 2),
        image_size=64,
        num_classes=K,
    )


@pytest.mark.parametrize("lvis", [False, True], ids=["ovcoco", "ovlvis_mask"])
def test_official_format_round_trip(tmp_path, lvis):
    det, emb = _tiny_detector(mask=lvis, learn_bg=lvis)
    sd = export_fvit_state_dict(det, emb)
    # the official names, e.g. F-ViT's EVA-CLIP tower and mmdet's ConvModule children
    assert "backbone.visual.blocks.0.attn.q_bias" in sd
    assert "backbone.visual.blocks.0.mlp.w3.weight" in sd
    assert "neck.lateral_convs.0.bn.running_var" in sd
    assert "roi_head.bbox_head.shared_fcs.1.weight" in sd
    assert sd["roi_head.bbox_head.all_embeddings"].shape == (32, K + 1)
    assert ("roi_head.mask_head.conv_logits.weight" in sd) == lvis
    assert ("rpn_head.rpn_conv.0.bn.weight" in sd) == lvis
    path = tmp_path / "fvit.pth"
    names = [f"n{i}" for i in range(K)]
    torch.save({"meta": {"CLASSES": tuple(names)}, "state_dict": sd}, path)
    ck = load_fvit(path, preset=_preset("ovlvis_vitb16" if lvis else "ovcoco_vitb16"))
    assert ck.classes == names
    torch.testing.assert_close(ck.class_embeds, emb)
    torch.testing.assert_close(ck.embeds_for(["n3", "n1"]), emb[[3, 1]])
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 48, 64, generator=g), torch.rand(3, 64, 40, generator=g)]
    base = [True, False, True, False, True]
    with one_thread():
        want = det.predict(images, emb, is_base=base)
        got = ck.detector.predict(images, ck.class_embeds, is_base=base)
    for im, w, o in zip(images, want, got, strict=True):
        assert w["boxes"].shape[0] > 0
        torch.testing.assert_close(o["boxes"], w["boxes"])
        torch.testing.assert_close(o["scores"], w["scores"])
        assert torch.equal(o["labels"], w["labels"])
        assert ("masks" in o) == lvis
        if lvis:
            assert o["masks"].shape[-2:] == im.shape[-2:]
            torch.testing.assert_close(o["masks"], w["masks"])


def test_mismatched_files_say_what_was_expected(tmp_path):
    det, emb = _tiny_detector(mask=False, learn_bg=False)
    sd = export_fvit_state_dict(det, emb)
    # another method's file: an EVA-CLIP checkpoint
    clip_file = tmp_path / "clip.pt"
    torch.save({"visual.blocks.0.norm1.weight": torch.ones(4)}, clip_file)
    with pytest.raises(CheckpointFormatError, match="expected F-ViT's MMDetection.*EVA-CLIP"):
        load_fvit(clip_file)
    # truncated: a part of the state dict is missing
    cut = {k: v for k, v in sd.items() if not k.startswith("rpn_head.")}
    torch.save({"state_dict": cut}, tmp_path / "cut.pth")
    with pytest.raises(CheckpointFormatError, match="incomplete.*truncated"):
        load_fvit(tmp_path / "cut.pth")
    # a truncated file on disk
    torch.save({"state_dict": sd}, tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "short.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError):
        load_fvit(tmp_path / "short.pth")
    # wrong model size: a ViT-B/16 preset for this (width 64) tower
    with pytest.raises(CheckpointFormatError, match=r"Expected F-ViT ovcoco_vitb16 \(ViT-B/16"):
        detect_fvit_preset(sd, "ovcoco_vitb16")
    # no released model has this size: the error lists them
    with pytest.raises(CheckpointFormatError, match="ovlvis_vitl14: ViT-L/14, 1203 classes"):
        detect_fvit_preset(sd)


def test_presets_follow_the_official_configs():
    b, lvis_l = FVIT_PRESETS["ovcoco_vitb16"], FVIT_PRESETS["ovlvis_vitl14"]
    assert (b.out_indices, b.image_size, b.clip_temperature, b.alpha, b.beta) == (
        (3, 5, 7, 11),
        640,
        75.0,
        0.1,
        0.8,
    )
    assert (b.score_thresh, b.nms_thresh, b.detections_per_img) == (0.01, 0.4, 100)
    assert (lvis_l.out_indices, lvis_l.beta, lvis_l.detections_per_img) == (
        (6, 10, 14, 23),
        0.4,
        300,
    )
    assert lvis_l.mask_head and lvis_l.rpn_norm and not b.mask_head
    classes = coco_ov_classes_coco_order()
    assert len(classes) == 65 and classes[:5] == [
        "person",
        "bicycle",
        "car",
        "motorcycle",
        "airplane",
    ]
    assert classes[-1] == "toothbrush"


def test_mmdet_anchors_are_unrounded_and_fractional():
    gen = MMDetAnchorGenerator([3.5, 7.0], scale=8.0, ratios=(0.5, 1.0, 2.0))
    # independent: mmdet's base anchors, w = s * 8 / sqrt(r), h = s * 8 * sqrt(r), centred on 0
    s, r = 3.5, 0.5
    w, h = s * 8 / math.sqrt(r), s * 8 * math.sqrt(r)
    torch.testing.assert_close(gen.cell_anchors[0][0], torch.tensor([-w / 2, -h / 2, w / 2, h / 2]))
    anchors = gen.grid_anchors([[2, 3], [1, 2]], [[torch.tensor(4)] * 2] * 2)
    assert anchors[0].shape == (2 * 3 * 3, 4)
    # cell (row 1, col 2) of level 0: shift (2 * 3.5, 1 * 3.5), ratio 0.5 first
    cell = anchors[0].reshape(2, 3, 3, 4)[1, 2, 0]
    torch.testing.assert_close(cell, torch.tensor([7 - w / 2, 3.5 - h / 2, 7 + w / 2, 3.5 + h / 2]))


def test_level_roi_align_uses_mmdet_levels_and_aligned_sampling():
    pool = LevelRoIAlign(["0", "1"], 1, [4.0, 8.0])
    f0 = torch.arange(64.0).reshape(1, 1, 8, 8)
    f1 = torch.full((1, 1, 16, 16), -1.0)
    # side 8 -> level 0 (8 / 56 < 1); side 120 -> floor(log2(120 / 56)) = 1
    small = torch.tensor([[8.0, 8.0, 16.0, 16.0]])
    big = torch.tensor([[0.0, 0.0, 120.0, 120.0]])
    out = pool({"0": f0, "1": f1}, [torch.cat([small, big])])  # one image
    assert pool.levels(torch.tensor([[0, 8.0, 8, 16, 16], [0, 0, 0, 120, 120]])).tolist() == [0, 1]
    # aligned: the 1x1 bin of [8, 16) px at stride 4 is cells [2, 4) -> its centre (3, 3) - 0.5
    # = (2.5, 2.5) in cell centres: the bilinear value of the 8x8 ramp there is 2.5 * 8 + 2.5
    torch.testing.assert_close(out[0, 0, 0, 0], torch.tensor(2.5 * 8 + 2.5))
    assert float(out[1, 0, 0, 0]) == -1.0


def test_mmdet_box_decoding_clamps_log_sizes_on_both_sides():
    coder = MMDetBoxCoder((10.0, 10.0, 5.0, 5.0))
    anchor = torch.tensor([[10.0, 20.0, 55.0, 40.0]])  # centre (32.5, 30), size 45 x 20
    clip = math.log(1000 / 16)
    for dw, dh in ((-30.0, 1.0), (30.0, -0.5), (2.0, 3.0)):  # stds 0.2: deltas / 5
        codes = torch.tensor([[1.0, -2.0, dw, dh]])
        w = 45 * math.exp(max(-clip, min(clip, dw / 5)))
        h = 20 * math.exp(max(-clip, min(clip, dh / 5)))
        cx, cy = 32.5 + 45 * 0.1, 30 - 20 * 0.2
        expected = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
        torch.testing.assert_close(coder.decode_single(codes, anchor), expected)
    # torchvision lets a very negative delta shrink the box further than mmdet does
    from torchvision.models.detection._utils import BoxCoder

    codes = torch.tensor([[0.0, 0.0, -30.0, 0.0]])
    tv = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode_single(codes, anchor)
    ours = coder.decode_single(codes, anchor)
    assert float(ours[0, 2] - ours[0, 0]) == pytest.approx(45 * 0.016, rel=1e-5)
    assert float(tv[0, 2] - tv[0, 0]) < float(ours[0, 2] - ours[0, 0])


def test_mmdet_mask_pasting_samples_pixel_centres():
    # a 2x2 mask [[0, 1], [1, 1]] pasted into the box (2, 2)-(6, 6) of an 8x8 image
    mask = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    out = paste_masks_mmdet(mask, torch.tensor([[2.0, 2.0, 6.0, 6.0]]), 8, 8)[0, 0]
    assert out.shape == (8, 8)

    def expected(px: int, py: int) -> float:
        # grid_sample, align_corners=False, zeros outside: mask cell centres at box coordinates
        # 1 and 3; the pixel centre px + 0.5 is at (px + 0.5 - 2) in box units of 2 cells / 4 px
        u, v = (px + 0.5 - 2) / 2 - 0.5, (py + 0.5 - 2) / 2 - 0.5
        total = 0.0
        for j in (0, 1):
            for i in (0, 1):
                wx, wy = max(0.0, 1 - abs(u - i)), max(0.0, 1 - abs(v - j))
                total += wx * wy * float(mask[0, 0, j, i])
        return total

    for py in range(8):
        for px in range(8):
            assert float(out[py, px]) == pytest.approx(expected(px, py), abs=1e-6), (px, py)
    assert float(out[0, 0]) == 0.0 and float(out[4, 4]) == pytest.approx(0.9375)
