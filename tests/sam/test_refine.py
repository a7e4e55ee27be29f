"""Trident-style SAM refinement (``ovdense.sam.refine``) and the segmentor's ``post_refiner`` slot.

Values, not shapes: the prompts equal a brute-force computation from the coarse map, the SAM
plumbing equals segment-anything's own ``SamPredictor``, and with SAM replaced by an oracle that
returns the true region under each prompt the refined map equals a pixel-by-pixel transcription
of Trident's merge (and snaps exactly to the true masks where each is prompted by one class).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovdense.config import LazyCall as L
from ovdense.config import LazyConfig, instantiate
from ovdense.data.synthetic import generate_scene
from ovdense.model_zoo import build_segmentor, get_config, list_presets
from ovdense.sam import missing_checkpoint_message, tiny_sam
from ovdense.sam.refine import (
    TRIDENT_DEFAULTS,
    SAMRefiner,
    attach_sam_refiner,
    coarse_maps,
    region_prompts,
)

#: The README demo's classes (the tiny CLIP does not separate "background" well).
VOCAB = ["red circle", "blue square"]
#: A CLI-style override mounting the refiner with a tiny random SAM.
TINY_OVERRIDE = (
    "model.post_refiner={'_target_': 'ovdense.sam.refine.SAMRefiner', 'sam': {'_target_': "
    "'ovdense.sam.model.tiny_sam', 'seed': 0, 'img_size': 128}, 'minimal_area': 8, "
    "'iou_thresh': -1e9}"
)


# -- helpers --------------------------------------------------------------------------------
def smooth_probs(seed: int, classes: int, h: int, w: int, scale: float = 4.0) -> torch.Tensor:
    """``[C, H, W]`` probabilities with blob-like regions (upsampled random logits)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, classes, max(2, h // 8), max(2, w // 8), generator=g)
    up = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return torch.softmax(scale * up, dim=1)[0]


def brute_force_regions(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """8-connected regions of a bool map, each a list of ``(y, x)``, in raster order of their
    first pixel (flood fill, no library)."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    for y0 in range(h):
        for x0 in range(w):
            if not mask[y0, x0] or seen[y0, x0]:
                continue
            stack, pixels = [(y0, x0)], []
            seen[y0, x0] = True
            while stack:
                y, x = stack.pop()
                pixels.append((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                            seen[yy, xx] = True
                            stack.append((yy, xx))
            out.append(pixels)
    return out


def expected_prompts(probs: torch.Tensor, thresh: float, area: int, ratio: int) -> list[tuple]:
    """Trident's ``split_connected_regions`` transcribed pixel by pixel: ``(class, (x, y) point,
    (x1, y1, x2, y2) box, region size)`` per region."""
    c, h, w = probs.shape
    dh, dw = (h // ratio, w // ratio) if ratio > 1 else (h, w)
    labels = probs.argmax(0)
    if ratio > 1:
        labels = F.interpolate(labels[None, None].float(), (dh, dw), mode="nearest")[0, 0].long()
        probs = F.interpolate(probs[None], (dh, dw), mode="bilinear", align_corners=False)[0]
    p = probs.numpy()
    lab = labels.numpy().copy()
    top = p.max(axis=0)
    out = []
    for k in range(c):
        if p[k].max() < thresh:
            continue
        mask = (lab == k) & ~((top < thresh) if thresh > 0 else np.zeros_like(lab, bool))
        for pixels in brute_force_regions(mask):
            if len(pixels) < area:
                continue
            best, best_yx = -1.0, None
            for y, x in sorted(pixels):  # raster order: the first maximum wins
                if p[k, y, x] > best:
                    best, best_yx = p[k, y, x], (y, x)
            ys = [y for y, _ in pixels]
            xs = [x for _, x in pixels]
            out.append(
                (k, (best_yx[1], best_yx[0]), (min(xs), min(ys), max(xs), max(ys)), len(pixels))
            )
    return out


def trident_merge_by_pixel(
    probs: torch.Tensor, classes: list[int], logits: torch.Tensor, iou: list[float], thr: float
) -> tuple[np.ndarray, np.ndarray]:
    """Trident's ``map_refinement_coarse`` + fallback, one pixel at a time: ``(labels [H, W],
    probs [C, H, W])`` (covered pixels: class scores normalised to sum to one)."""
    p = probs.double().numpy()
    lg = logits.double().numpy()
    c, h, w = p.shape
    kept = [i for i in range(len(classes)) if iou[i] > thr]
    labels = p.argmax(0)
    out = p.copy()
    for y in range(h):
        for x in range(w):
            scores = np.zeros(c)
            for k in range(c):
                mine = [i for i in kept if classes[i] == k]
                if any(lg[i, y, x] > 0 for i in mine):
                    scores[k] = max(p[k, y, x] / (1 + math.exp(-lg[i, y, x])) for i in mine)
            if scores.sum() > 0:
                labels[y, x] = int(scores.argmax())
                out[:, y, x] = scores / scores.sum()
    return labels, out


class OracleRefiner(SAMRefiner):
    """SAM replaced by the truth: each prompt's mask is the true region (of a partition of the
    image) under its point, with a fixed predicted IoU."""

    def __init__(self, truth: np.ndarray, iou: float = 0.95, **options) -> None:
        super().__init__(sam=tiny_sam(0, 64), **options)
        self.truth = torch.from_numpy(np.asarray(truth, dtype=bool))
        self.iou_value = iou
        self.seen: list[tuple] = []

    def embed(self, images):
        return torch.zeros(images.shape[0], 1, 1, 1), (0, 0)

    def predict_masks(self, embedding, prompts, input_size, image_size):
        h, w = image_size
        dh, dw = prompts.coarse_size
        masks = []
        for x, y in prompts.points.tolist():
            fy, fx = min(h - 1, int(y * h / dh)), min(w - 1, int(x * w / dw))
            masks.append(self.truth[int(torch.nonzero(self.truth[:, fy, fx])[0])])
        logits = torch.where(torch.stack(masks), 20.0, -20.0)
        self.seen.append((prompts, logits))
        return logits, torch.full((len(masks),), self.iou_value)


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def segmentor():
    return build_segmentor("shapes/maskclip", device="cpu")


@pytest.fixture(scope="module")
def scene():
    # scene 2: with the shipped tiny CLIP a true region is prompted by one class only (the oracle
    # test needs one); scene 3 had one with the stage-1 weights, not with stage 2's
    return generate_scene(0, 2, size=128, split="val", objects=["red circle", "blue square"])


def _image(scene) -> torch.Tensor:
    return torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 255


@pytest.fixture()
def plain(segmentor):
    """The shared segmentor without a refiner, restored after the test."""
    order = segmentor.decode_order
    segmentor.post_refiner = None
    yield segmentor
    segmentor.post_refiner = None
    segmentor.decode_order = order


# -- prompts --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "seed, thresh, area, ratio", [(0, 0.2, 4, 2), (1, 0.0, 0, 2), (2, 0.45, 3, 1), (3, 0.3, 9, 3)]
)
def test_prompts_equal_a_brute_force_computation(seed, thresh, area, ratio):
    probs = smooth_probs(seed, 4, 45, 62)
    pr = region_prompts(probs, thresh, area, ratio)
    want = expected_prompts(probs, thresh, area, ratio)
    assert len(want) > 3
    got = [
        (k, tuple(int(v) for v in pt), tuple(int(v) for v in bx), int(rg.sum()))
        for k, pt, bx, rg in zip(
            pr.classes.tolist(), pr.points.tolist(), pr.boxes.tolist(), pr.regions
        )
    ]
    assert got == want
    # the regions are those pixels of the downsampled label map (and disjoint)
    labels, small = coarse_maps(probs, ratio)
    assert pr.coarse_size == tuple(labels.shape) == tuple(small.shape[-2:])
    for k, rg in zip(pr.classes.tolist(), pr.regions):
        assert bool((labels[rg] == k).all())
    assert int(pr.regions.sum(0).max()) <= 1


def test_unassigned_pixels_and_weak_classes_give_no_prompt():
    probs = torch.full((3, 20, 20), 0.1)
    probs[0] = 0.8  # class 0 everywhere with 0.8
    probs[1, 2:8, 2:8], probs[0, 2:8, 2:8] = 0.8, 0.1  # a 6x6 square of class 1
    probs[2, 12:18, 12:18], probs[0, 12:18, 12:18] = 0.12, 0.05  # class 2 top, p 0.44
    probs /= probs.sum(0, keepdim=True)
    pr = region_prompts(probs, coarse_thresh=0.5, minimal_area=1, down_ratio=1)
    assert pr.classes.tolist() == [0, 1]
    assert pr.boxes[1].tolist() == [2.0, 2.0, 7.0, 7.0]
    # class 0's region excludes the square and the weak (unassigned) square
    assert int(pr.regions[0].sum()) == 400 - 36 - 36
    assert region_prompts(probs, 0.5, minimal_area=37, down_ratio=1).classes.tolist() == [0]


# -- SAM plumbing ---------------------------------------------------------------------------
def test_sam_part_equals_segment_anythings_predictor():
    from segment_anything import SamPredictor

    sam = tiny_sam(0, 128)
    ref = SAMRefiner(sam=sam, minimal_area=6)
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (1, 3, 70, 100), generator=g).float() / 255
    probs = smooth_probs(5, 3, 70, 100)
    pr = region_prompts(probs, ref.coarse_thresh, ref.minimal_area, ref.down_ratio)
    assert len(pr) >= 3
    emb, input_size = ref.embed(image)
    logits, iou = ref.predict_masks(emb, pr, input_size, (70, 100))

    pred = SamPredictor(sam)
    pred.set_image((image[0].permute(1, 2, 0) * 255).round().byte().numpy())
    assert input_size == pred.input_size
    torch.testing.assert_close(emb, pred.features)
    masks = ref.mask_prompts(pr, (70, 100))
    for i in range(len(pr)):
        # Trident's mask prompt: the class map at longest side m, padded, 0.005 p where p > 0.2
        m = sam.prompt_encoder.mask_input_size[0]
        ph, pw = pred.transform.get_preprocess_shape(70, 100, m)
        cls = pr.coarse_probs[pr.classes[i]][None, None]
        want = F.pad(F.interpolate(cls, (ph, pw), mode="bilinear"), (0, m - pw, 0, m - ph))
        want = torch.where(want > 0.2, 0.005 * want, 0.0)
        torch.testing.assert_close(masks[i : i + 1], want)
        got_logits, got_iou, _ = pred.predict_torch(
            pred.transform.apply_coords_torch(pr.points[i : i + 1], pr.coarse_size)[None],
            torch.ones(1, 1),
            pred.transform.apply_boxes_torch(pr.boxes[i : i + 1], pr.coarse_size),
            want,
            multimask_output=False,
            return_logits=True,
        )
        torch.testing.assert_close(logits[i], got_logits[0, 0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(iou[i], got_iou[0, 0], atol=1e-5, rtol=1e-5)


# -- merge: an oracle SAM -------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [1, 2])
def test_oracle_masks_snap_the_map_to_the_true_regions(ratio):
    h = w = 64
    truth_labels = np.zeros((h, w), dtype=np.int64)
    truth_labels[8:28, 8:32] = 1
    truth_labels[36:56, 30:58] = 2
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")

    def blob(cy, cx):
        return 4 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 10.0**2))

    logits = torch.stack([torch.full((h, w), 2.0), blob(17.5, 19.5), blob(45.5, 43.5)])
    probs = torch.softmax(2 * logits, dim=0)
    coarse = probs.argmax(0).numpy()
    assert (coarse != truth_labels).mean() > 0.03  # the coarse map is off

    truth = np.stack([truth_labels == k for k in range(3)])
    ref = OracleRefiner(truth, minimal_area=4, down_ratio=ratio)
    out = ref(torch.rand(1, 3, h, w), probs[None])[0]
    np.testing.assert_array_equal(out.argmax(0).numpy(), truth_labels)
    torch.testing.assert_close(out, torch.from_numpy(truth).float())  # one class covers each

    # rejected masks (predicted IoU <= 0.8) change nothing
    ref = OracleRefiner(truth, iou=TRIDENT_DEFAULTS["iou_thresh"], minimal_area=4)
    assert torch.equal(ref(torch.rand(1, 3, h, w), probs[None]), probs[None])


@pytest.mark.parametrize("order", ["ovdense", "paper"])
def test_oracle_on_the_shapes_world_equals_trident_merge(plain, scene, order):
    plain.decode_order = order
    image = _image(scene)
    base = plain(image, VOCAB)
    truth = np.concatenate([(scene.label == 0)[None], scene.masks])
    ref = OracleRefiner(truth, minimal_area=8)
    plain.post_refiner = ref
    out = plain(image, VOCAB)

    prompts, logits = ref.seen[-1]
    assert len(prompts) >= 2
    labels, probs = trident_merge_by_pixel(
        base.probs[0], prompts.classes.tolist(), logits, [0.95] * len(prompts), 0.8
    )
    np.testing.assert_array_equal(out.labels[0].numpy(), labels)
    torch.testing.assert_close(out.probs[0].double(), torch.from_numpy(probs))
    # a true region prompted by one class only is labelled that class, exactly
    snapped = 0
    for region in truth:
        hit = {
            k
            for k, m in zip(prompts.classes.tolist(), logits)
            if bool((m > 0)[torch.from_numpy(region)].all())
        }
        if len(hit) == 1:
            assert bool((out.labels[0][torch.from_numpy(region)] == hit.pop()).all())
            snapped += 1
    assert snapped >= 1
    assert not torch.equal(out.labels, base.labels)


# -- the slot on a segmentor ----------------------------------------------------------------
@pytest.mark.parametrize("order", ["ovdense", "paper"])
def test_tiny_sam_refiner_applies_to_the_final_probabilities(plain, scene, order):
    plain.decode_order = order
    image = _image(scene)
    base = plain(image, VOCAB)
    ref = SAMRefiner(sam=tiny_sam(0, 128), minimal_area=8, iou_thresh=-1e9)
    want = ref(image, base.probs)
    plain.post_refiner = ref
    out = plain(image, VOCAB)
    torch.testing.assert_close(out.probs, want)
    assert torch.equal(out.labels, want.argmax(1))
    assert not torch.equal(out.labels, base.labels)  # the random SAM's masks do change it
    # labels only (the streaming path is skipped with a refiner): the same
    only = plain.decode(plain.encode_image(image), plain.encode_text(VOCAB), return_probs=False)
    assert only.probs is None and torch.equal(only.labels, out.labels)


@pytest.mark.parametrize("order", ["ovdense", "paper"])
def test_refiner_off_or_rejecting_everything_changes_nothing(plain, scene, order):
    plain.decode_order = order
    image = _image(scene)
    base = plain(image, VOCAB)
    plain.post_refiner = SAMRefiner(sam=tiny_sam(0, 128), minimal_area=8, iou_thresh=math.inf)
    out = plain(image, VOCAB)
    assert torch.equal(out.labels, base.labels) and torch.equal(out.probs, base.probs)
    plain.post_refiner = None
    again = plain(image, VOCAB)
    assert torch.equal(again.labels, base.labels) and torch.equal(again.probs, base.probs)


def test_batches_equal_one_image_at_a_time(plain, scene):
    plain.decode_order = "ovdense"
    attach_sam_refiner(plain, sam=tiny_sam(0, 128), minimal_area=8, iou_thresh=-1e9)
    other = generate_scene(0, 1, size=128, split="val", objects=["red circle", "blue square"])
    a, b = _image(scene), _image(other)
    c = a[:, :, 10:106, 4:116]  # 96 x 112
    single = [plain(x, VOCAB) for x in (a, b, c)]
    batch = plain.segment_batch([a[0], b[0], c[0]], VOCAB)
    same_size = plain(torch.cat([a, b]), VOCAB)  # one SAM encoder call for both
    for i, (one, many) in enumerate(zip(single, batch)):
        assert torch.equal(one.labels, many.labels), i
        torch.testing.assert_close(one.probs, many.probs, atol=1e-5, rtol=1e-5)
    for i in range(2):
        assert torch.equal(same_size.labels[i], single[i].labels[0]), i
        torch.testing.assert_close(same_size.probs[i], single[i].probs[0], atol=1e-5, rtol=1e-5)


def test_slot_checks_its_contract(plain, scene):
    image = _image(scene)
    feats = plain.encode_image(image)  # encoded without a refiner: no images kept
    plain.post_refiner = SAMRefiner(sam=tiny_sam(0, 128))
    with pytest.raises(ValueError, match="encode the image again"):
        plain.decode(feats, plain.encode_text(VOCAB))

    class Bad(torch.nn.Module):
        def forward(self, images, probs):
            return probs[:, :1]

    plain.post_refiner = Bad()
    with pytest.raises(ValueError, match=r"returned \(1, 1, 128, 128\)"):
        plain(image, VOCAB)


# -- configs and messages -------------------------------------------------------------------
def test_config_override_works_for_every_preset(scene):
    presets = list_presets("seg")
    assert "clip_dinoiser" in presets and "shapes/maskclip" in presets
    for name in presets:
        cfg = LazyConfig.apply_overrides(get_config(name), [TINY_OVERRIDE])
        assert cfg.model.post_refiner.minimal_area == 8, name
    # built from a config: Python form and command-line form give the same model
    cfg = get_config("shapes/naclip")
    cfg.model.post_refiner = L(SAMRefiner)(
        sam=L(tiny_sam)(seed=0, img_size=128), minimal_area=8, iou_thresh=-1e9
    )
    python_form = instantiate(cfg.model)
    cli_form = build_segmentor("shapes/naclip", device="cpu", overrides=[TINY_OVERRIDE])
    assert isinstance(cli_form.post_refiner, SAMRefiner)
    image = _image(scene)
    x, y = python_form(image, VOCAB), cli_form(image, VOCAB)
    assert torch.equal(x.labels, y.labels) and torch.equal(x.probs, y.probs)


def test_missing_checkpoint_is_one_sentence(plain):
    with pytest.raises(ValueError) as err:
        SAMRefiner()
    assert str(err.value) == missing_checkpoint_message("vit_b", "model.post_refiner.checkpoint=")
    with pytest.raises(ValueError) as err:
        attach_sam_refiner(plain, "vit_l")
    assert str(err.value) == missing_checkpoint_message("vit_l", "--sam-checkpoint")
    assert str(err.value).startswith("SAM vit_l needs its checkpoint file: download https://")
    assert plain.post_refiner is None
    override = "model.post_refiner={'_target_': 'ovdense.sam.refine.SAMRefiner'}"
    with pytest.raises(ValueError, match="pass model.post_refiner.checkpoint=/path/sam_vit_b"):
        build_segmentor("shapes/maskclip", device="cpu", overrides=[override])
    with pytest.raises(FileNotFoundError, match="sam_vit_b_01ec64.pth"):
        SAMRefiner("vit_b", "/nonexistent/sam.pth")
