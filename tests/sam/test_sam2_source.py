"""Sam2MaskSource against the real ``sam2`` package (Meta's SAM 2, PyPI ``sam2``).

Skipped without sam2. Models are sam2's own, built by ``sam2.build_sam.build_sam2`` from its
``sam2.1_hiera_t`` config with random weights; the fast tests shrink its image encoder through
the builder's hydra overrides (one block per stage, 8 channels) so that a 1024 x 1024 encoding
takes well under a second on a CPU. The reference is sam2's ``SAM2AutomaticMaskGenerator``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

sam2 = pytest.importorskip("sam2")

from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator  # noqa: E402
from sam2.build_sam import build_sam2  # noqa: E402

from ovdense.sam import CachedMaskSource, Sam2MaskSource, build_mask_source  # noqa: E402

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SHRINK = [
    "++model.image_encoder.trunk.stages=[1,1,1,1]",
    "++model.image_encoder.trunk.global_att_blocks=[]",
    "++model.image_encoder.trunk.embed_dim=8",
    "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",
]
# Random weights predict low IoU and stability: keep every candidate so masks come out, and
# batch 2 of the 4 points to cover more than one decoder batch.
OPTIONS = {
    "points_per_side": 2,
    "points_per_batch": 2,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
}


def _image() -> np.ndarray:
    """A 48 x 64 RGB scene: two coloured rectangles on dark noise."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 20, (48, 64, 3)).astype(np.uint8)
    img[10:30, 8:40] = (200, 30, 30)
    img[25:45, 35:60] = (20, 180, 40)
    return img


def _reference(model: torch.nn.Module, image: np.ndarray, **options) -> np.ndarray:
    """SAM 2's own automatic masks, stacked in record order: ``[N, H, W]`` bool."""
    records = SAM2AutomaticMaskGenerator(model, output_mode="binary_mask", **options).generate(
        image
    )
    return np.stack([r["segmentation"] for r in records]).astype(bool)


@pytest.fixture(scope="module")
def tiny_sam2() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_sam2(
        CONFIG, None, device="cpu", apply_postprocessing=False, hydra_overrides_extra=SHRINK
    )


def test_sam2_source_returns_sam2s_masks_in_order(tiny_sam2, tmp_path):
    image = _image()
    src = Sam2MaskSource(tiny_sam2, config=CONFIG, **OPTIONS)
    cached = CachedMaskSource(src, tmp_path)
    masks = cached(image)  # a miss: Sam2MaskSource's masks, written to the cache
    assert cached.misses == 1
    expected = _reference(tiny_sam2, image, **OPTIONS)
    assert masks.dtype == torch.bool and tuple(masks.shape) == (len(expected), 48, 64)
    assert len(expected) >= 2  # several masks, so the order is checked too
    assert len({m.tobytes() for m in expected}) == len(expected)
    assert torch.equal(masks, torch.from_numpy(expected))

    again = CachedMaskSource(Sam2MaskSource(tiny_sam2, config=CONFIG, **OPTIONS), tmp_path)
    assert torch.equal(again(image), masks) and (again.hits, again.misses) == (1, 0)
    assert again.settings_key == cached.settings_key

    s = src.settings()
    assert s["source"] == "sam2" and s["apply_postprocessing"] is False
    assert s["options"]["points_per_side"] == 2 and s["options"]["box_nms_thresh"] == 0.7
    assert s["model"]["image_size"] == 1024 and len(s["state_dict_sha256"]) == 64
    json.dumps(s)  # the cache key is JSON


def test_sam2_source_settings_follow_options_and_decoder(tiny_sam2):
    base = Sam2MaskSource(tiny_sam2, config=CONFIG, **OPTIONS)
    other = Sam2MaskSource(tiny_sam2, config=CONFIG, **{**OPTIONS, "box_nms_thresh": 0.5})
    assert base.settings() != other.settings()
    torch.manual_seed(0)
    post = build_sam2(
        CONFIG, None, device="cpu", apply_postprocessing=True, hydra_overrides_extra=SHRINK
    )
    # Same weights, but its decoder falls back to multi-mask output: another cache key.
    assert torch.equal(
        next(iter(post.state_dict().values())), next(iter(tiny_sam2.state_dict().values()))
    )
    s = Sam2MaskSource(post, config=CONFIG, **OPTIONS).settings()
    assert s["apply_postprocessing"] is True
    assert s["state_dict_sha256"] == base.settings()["state_dict_sha256"]
    assert s != base.settings()


@pytest.fixture(scope="module")
def hiera_t_checkpoint(tmp_path_factory):
    """sam2.1_hiera_t with random weights, saved like SAM 2's official files
    (``{"model": state_dict}``): ``(model, path)``."""
    torch.manual_seed(1)
    model = build_sam2(CONFIG, None, device="cpu", apply_postprocessing=False)
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny_random.pt"
    torch.save({"model": model.state_dict()}, path)
    return model, path


def test_sam2_source_loads_a_checkpoint(hiera_t_checkpoint):
    model, path = hiera_t_checkpoint
    src = build_mask_source("sam2", config=CONFIG, checkpoint=path, **OPTIONS)
    assert isinstance(src, Sam2MaskSource) and not src.model.training
    loaded, saved = src.model.state_dict(), model.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    s = src.settings()
    assert s["config"] == CONFIG and s["apply_postprocessing"] is False
    assert s["checkpoint"] == {"file": path.name, "bytes": path.stat().st_size}


def test_sam2_source_rejects_a_checkpoint_of_another_config(hiera_t_checkpoint):
    _, path = hiera_t_checkpoint
    with pytest.raises(ValueError, match="does not fit config 'configs/sam2.1/sam2.1_hiera_s"):
        Sam2MaskSource(config="configs/sam2.1/sam2.1_hiera_s.yaml", checkpoint=path)


@pytest.mark.slow
def test_sam2_source_from_checkpoint_matches_generator(hiera_t_checkpoint, tmp_path):
    """The whole path with the unshrunk sam2.1_hiera_t (about 10 s per encoding on a CPU)."""
    model, path = hiera_t_checkpoint
    image = _image()
    source = build_mask_source(
        "sam2", cache_dir=tmp_path, config=CONFIG, checkpoint=path, **OPTIONS
    )
    masks = source(image)
    expected = _reference(model.eval(), image, **OPTIONS)
    assert len(expected) >= 1 and torch.equal(masks, torch.from_numpy(expected))
    assert torch.equal(source(image), masks) and source.hits == 1
