"""The class-agnostic mask sources (ovdense.sam.mask_source): the contract, segment-anything's
automatic masks through the source, SAM 2's guarded import, the on-disk cache (exact round
trip, keyed by content and settings, atomic), and the region map."""

from __future__ import annotations

import builtins
import json
import sys

import numpy as np
import pytest
import torch

from ovdense.sam import (
    MASK_SOURCES,
    CachedMaskSource,
    MaskGeneratorOptions,
    MaskSource,
    Sam2MaskSource,
    SAM3MaskSource,
    SamInstanceSegmenter,
    SamMaskSource,
    build_mask_source,
    masks_to_region_map,
)
from ovdense.sam.instances import _stack_records
from ovdense.sam.mask_source import check_rgb_image, image_digest

# a tiny random SAM gives no masks at the default thresholds: keep every proposal
LOOSE = MaskGeneratorOptions(
    points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
)


class RandomMasks(MaskSource):
    """A source whose masks are a function of the image (and counts its calls)."""

    def __init__(self, n: int = 5, seed: int = 0) -> None:
        self.n, self.seed, self.calls = n, seed, 0

    def generate(self, image):
        self.calls += 1
        g = np.random.default_rng(self.seed + int(image.sum()) % 1000)
        return g.random((self.n, *image.shape[:2])) > 0.5

    def settings(self):
        return {"source": "random", "n": self.n, "seed": self.seed}


def _image(seed=0, size=(37, 53)):
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_registry_names_and_builder():
    assert {"sam", "sam2", "sam3"} <= set(MASK_SOURCES.names())
    assert MASK_SOURCES.get("sam") is SamMaskSource and SamMaskSource.name == "sam"
    assert Sam2MaskSource.name == "sam2"
    assert MASK_SOURCES.get("sam3") is SAM3MaskSource and SAM3MaskSource.name == "sam3"
    with pytest.raises(KeyError, match="Unknown mask source 'sam4'"):
        build_mask_source("sam4")


def test_contract_checks_input_and_output():
    src = RandomMasks(n=3)
    out = src(_image())
    assert out.dtype == torch.bool and out.shape == (3, 37, 53) and out.device.type == "cpu"
    for bad in (_image().astype(np.float32), _image()[..., :2], "image.png"):
        with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8"):
            src(bad)

    class Wrong(RandomMasks):
        def generate(self, image):
            return np.zeros((2, 5, 5), bool)

    with pytest.raises(ValueError, match=r"returns \[N, 37, 53\] masks"):
        Wrong()(_image())


def test_empty_case_is_a_zero_length_tensor(tmp_path):
    src = RandomMasks(n=0)
    out = src(_image())
    assert out.shape == (0, 37, 53) and out.dtype == torch.bool
    cached = CachedMaskSource(src, tmp_path)
    assert cached(_image()).shape == (0, 37, 53)
    again = cached(_image())
    assert again.shape == (0, 37, 53) and cached.hits == 1 and cached.misses == 1
    assert masks_to_region_map(out).eq(0).all()


def test_sam_source_equals_the_automatic_generator(small_sam, scene):
    from segment_anything import SamAutomaticMaskGenerator

    image = scene.image
    src = SamMaskSource(sam=small_sam, options=LOOSE)
    got = src(image)
    records = SamAutomaticMaskGenerator(small_sam, output_mode="binary_mask", **vars(LOOSE))
    want, _ = _stack_records(records.generate(image), image.shape[:2])
    assert got.shape[0] > 0  # the loose settings keep proposals even from a random SAM
    assert torch.equal(got, torch.from_numpy(want))
    settings = src.settings()
    assert settings["source"] == "sam" and settings["options"]["points_per_side"] == 4
    assert len(settings["state_dict_sha256"]) == 64
    json.dumps(settings)


def test_sam_source_needs_a_model_or_checkpoint():
    with pytest.raises(ValueError, match="sam_vit_b_01ec64.pth"):
        SamMaskSource()
    with pytest.raises(ValueError, match="kind"):
        SamMaskSource(kind="vit_x")


def test_instance_segmenter_reads_masks_from_a_source(shapes_segmentor, scene):
    """The same masks reach SamInstanceSegmenter through a (cached) source."""
    masks = torch.from_numpy(np.stack([m for m in scene.masks]))

    class Fixed(MaskSource):
        def generate(self, image):
            return masks

        def settings(self):
            return {"source": "fixed"}

    labeler = SamInstanceSegmenter(shapes_segmentor, mask_source=Fixed(), nms_iou=None)
    got, iou = labeler.generate_masks(scene.image)
    assert np.array_equal(got, masks.numpy()) and np.all(iou == 1.0)
    direct = labeler.classify_masks(scene.image, masks.numpy(), ["red circle", "blue square"])
    via = labeler.predict(scene.image, ["red circle", "blue square"])
    assert np.array_equal(via.labels, direct.labels) and np.array_equal(via.masks, direct.masks)


def test_cache_round_trip_is_exact_and_keyed(tmp_path):
    src = RandomMasks(n=7)
    cached = CachedMaskSource(src, tmp_path / "cache")
    a, b = _image(0), _image(1)
    first = cached(a)
    assert src.calls == 1 and cached.misses == 1 and cached.hits == 0
    again = cached(a)
    assert src.calls == 1 and cached.hits == 1
    assert torch.equal(first, again) and torch.equal(first, src(a))
    # another image: computed; a fresh cache object over the same folder reads both back
    cached(b)
    fresh = CachedMaskSource(RandomMasks(n=7), tmp_path / "cache")
    assert torch.equal(fresh(a), first) and fresh.hits == 1 and fresh.source.calls == 0
    # other settings: another key, computed again
    other = CachedMaskSource(RandomMasks(n=7, seed=1), tmp_path / "cache")
    assert other.settings_key != cached.settings_key
    other(a)
    assert other.misses == 1
    # a changed pixel is another image
    a2 = a.copy()
    a2[0, 0, 0] ^= 1
    assert image_digest(a2) != image_digest(a)
    assert cached.path_for(a2) != cached.path_for(a)
    # files: the settings beside the masks, no temporaries left
    folder = tmp_path / "cache" / cached.settings_key[:16]
    assert json.loads((folder / "settings.json").read_text()) == src.settings()
    assert cached.path_for(a).is_file()
    assert not [p for p in (tmp_path / "cache").rglob(".*") if p.is_file()]


def test_cache_bits_survive_odd_sizes(tmp_path):
    """Bit-packing with a pixel count that is not a multiple of 8 round-trips exactly."""
    masks = torch.from_numpy(np.random.default_rng(3).random((4, 3, 5)) > 0.3)

    class Fixed(MaskSource):
        def generate(self, image):
            return masks

        def settings(self):
            return {"source": "odd"}

    cached = CachedMaskSource(Fixed(), tmp_path)
    img = _image(size=(3, 5))
    cached(img)
    back = CachedMaskSource(Fixed(), tmp_path)(img)
    assert torch.equal(back, masks)


def test_cache_ignores_a_file_of_another_image(tmp_path):
    src = RandomMasks(n=2)
    cached = CachedMaskSource(src, tmp_path)
    a, b = _image(0), _image(1, size=(37, 53))
    cached(a)
    cached.path_for(b).parent.mkdir(parents=True, exist_ok=True)
    cached.path_for(a).replace(cached.path_for(b))  # a file under the wrong name
    out = cached(b)
    assert cached.misses == 2 and torch.equal(out, src(b))


def test_build_mask_source_with_cache(tmp_path, small_sam, scene):
    src = build_mask_source("sam", cache_dir=tmp_path, sam=small_sam, options=LOOSE)
    assert isinstance(src, CachedMaskSource) and isinstance(src.source, SamMaskSource)
    first = src(scene.image)
    assert torch.equal(src(scene.image), first) and src.hits == 1


def test_sam2_import_is_guarded(monkeypatch):
    real_import = builtins.__import__

    def no_sam2(name, *args, **kwargs):
        if name == "sam2" or name.startswith("sam2."):
            raise ImportError("No module named 'sam2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sam2", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_sam2)
    with pytest.raises(ImportError, match=r'pip install "ovdense\[sam2\]"'):
        Sam2MaskSource(checkpoint="sam2_hiera_large.pt")
    with pytest.raises(ValueError, match="sam2_hiera_large.pt"):
        Sam2MaskSource()
    with pytest.raises(ValueError, match="Unknown SAM 2 generator options"):
        Sam2MaskSource(generator=object(), points_per_sid=8)


def test_sam2_source_with_a_generator():
    """SAM 2's path (records -> masks, settings) with a stand-in generator."""
    masks = np.random.default_rng(0).random((3, 37, 53)) > 0.5

    class Gen:
        def generate(self, image):
            return [{"segmentation": m, "predicted_iou": 0.9} for m in masks]

    src = Sam2MaskSource(generator=Gen(), cache_id="stand-in", points_per_side=8)
    assert torch.equal(src(_image()), torch.from_numpy(masks))
    s = src.settings()
    assert s["source"] == "sam2" and s["cache_id"] == "stand-in"
    assert s["options"]["points_per_side"] == 8 and s["options"]["pred_iou_thresh"] == 0.8
    with pytest.raises(ValueError, match="cache_id"):
        Sam2MaskSource(generator=Gen()).settings()


def test_region_map_paints_larger_masks_last():
    m = torch.zeros(3, 4, 4, dtype=torch.bool)
    m[0, :2, :2] = True  # area 4
    m[1, :, :] = True  # area 16: painted last, covers everything
    m[2, 0, 0] = True  # area 1
    assert masks_to_region_map(m).eq(3).all()
    m[1] = False
    m[1, 3, 3] = True  # area 1 like mask 2: equal areas keep their order (ids 1, 2)
    want = torch.zeros(4, 4, dtype=torch.int32)
    want[:2, :2] = 3  # mask 0 (area 4, id 3) painted over mask 2 (id 2), which vanishes
    want[3, 3] = 1
    assert torch.equal(masks_to_region_map(m), want)
    given = masks_to_region_map(m, order="given")
    assert given[0, 0] == 3 and given[1, 1] == 1 and given[3, 3] == 2


def test_check_rgb_image_accepts_tensors():
    t = torch.from_numpy(_image())
    assert check_rgb_image(t).shape == (37, 53, 3)
