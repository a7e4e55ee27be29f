"""SAM 3 as a semantic segmentor and a mask source (ovdense.sam.sam3).

The formulas are checked against direct computations: per pixel by hand, and against the
official ``sam3`` package's own ``Sam3Processor`` (its per-phrase instances, scores and masks).
The model is a tiny random SAM 3 built from the official modules; tests that need ``sam3`` skip
without it (it is an optional extra, kept out of CI: its pins would change numpy).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import write_ade_layout

from ovdense.config import LazyConfig, instantiate
from ovdense.evaluation.runner import resolve_eval_config, run_eval
from ovdense.model_zoo import get_config
from ovdense.sam.sam3 import (
    SAM3Segmentor,
    instance_score_maps,
    missing_sam3_checkpoint_message,
    semantic_score_maps,
)
from ovdense.utils.cli import UserError

TINY = "model.sam3={'_target_': 'ovdense.sam.sam3.tiny_sam3', 'seed': 0}"
VOCAB = ["background", "cat|kitty", "dog", "tree|bush|plant"]


# -- the formulas, by hand (no sam3 needed) ------------------------------------------------------
def test_instance_score_maps_equal_a_per_pixel_computation():
    g = torch.Generator().manual_seed(0)
    p, q, h, w, size = 3, 5, 4, 6, (7, 9)
    logits, presence = torch.randn(p, q, 1, generator=g), torch.randn(p, 1, generator=g)
    masks = torch.randn(p, q, h, w, generator=g)
    thd = 0.2
    got = instance_score_maps(logits, presence, masks, size, thd, chunk=2)
    up = torch.nn.functional.interpolate(masks, size=size, mode="bilinear", align_corners=False)
    want = torch.zeros(p, *size)
    for i in range(p):
        for j in range(q):
            s = float(torch.sigmoid(logits[i, j, 0]) * torch.sigmoid(presence[i, 0]))
            if s > thd:
                want[i] = torch.maximum(want[i], s * torch.sigmoid(up[i, j]))
    assert torch.allclose(got, want, atol=1e-6)
    assert (want == 0).all(dim=(1, 2)).sum() < p  # some instances kept: the test can fail
    none = instance_score_maps(logits, presence, masks, size, instance_thd=1.0)
    assert none.shape == (p, *size) and (none == 0).all()


def test_semantic_score_maps_equal_a_direct_computation():
    g = torch.Generator().manual_seed(1)
    presence, sem = torch.randn(2, 1, generator=g), torch.randn(2, 1, 3, 4, generator=g)
    got = semantic_score_maps(presence, sem, (6, 8))
    up = torch.nn.functional.interpolate(sem, size=(6, 8), mode="bilinear", align_corners=False)
    for i in range(2):
        assert torch.allclose(got[i], torch.sigmoid(presence[i]) * torch.sigmoid(up[i, 0]))


def test_missing_checkpoint_is_one_sentence():
    with pytest.raises(ValueError) as err:
        SAM3Segmentor()
    msg = str(err.value)
    assert msg == missing_sam3_checkpoint_message()
    assert "SAM Licence" in msg and "model.checkpoint=/path/sam3.pt" in msg and "\n" not in msg


def test_presets_declare_sam3_and_refuse_the_unified_protocol():
    cfg = get_config("sam3")
    assert cfg.model.checkpoint is None and cfg.model.score == "instances"
    ev = resolve_eval_config("sam3", "voc21")
    assert ev.method == "sam3" and ev.class_rule == "unified"
    with pytest.raises(UserError, match="takes no templates.*--protocol paper"):
        resolve_eval_config("sam3", "voc21", "unified")


# -- with the official package ------------------------------------------------------------------
@pytest.fixture(scope="module")
def sam3_model():
    pytest.importorskip("sam3")
    from ovdense.sam.sam3 import tiny_sam3

    return tiny_sam3(seed=0)


@pytest.fixture()
def no_pin_memory(monkeypatch):
    """Let the official Sam3Processor run on CPU (sam3 0.1.4 calls pin_memory for boxes)."""
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)


def _image(h=40, w=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, h, w), generator=g, dtype=torch.uint8).float() / 255


def _processor_maps(model, image, vocab, thd):
    """Per class: max over its names and over Sam3Processor's kept instances of score x mask."""
    from sam3.model.sam3_image_processor import Sam3Processor

    from ovdense.vocabulary import Vocabulary

    proc = Sam3Processor(model, resolution=56, device="cpu", confidence_threshold=thd)
    state = proc.set_image((image[0] * 255).round().to(torch.uint8))
    vocab = Vocabulary.coerce(vocab)
    out = torch.zeros(vocab.num_classes, *image.shape[-2:])
    for c, names in enumerate(vocab):
        if c == 0:
            continue  # background is not prompted
        for name in names:
            st = proc.set_text_prompt(name, state)
            for score, mask in zip(st["scores"], st["masks_logits"][:, 0], strict=True):
                out[c] = torch.maximum(out[c], score * mask)
    return out


@pytest.mark.parametrize("thd", [0.0, 0.26])
def test_scores_equal_the_official_processor(sam3_model, no_pin_memory, thd):
    image = _image()
    seg = SAM3Segmentor(sam3_model, instance_thd=thd, phrase_batch=3)
    got = seg(image, VOCAB).probs[0]
    want = _processor_maps(sam3_model, image, VOCAB, thd)
    assert torch.allclose(got, want, atol=1e-5)
    assert (want[0] == 0).all() and (want[1:] > 0).any()
    if thd > 0:  # the threshold dropped some instances and kept others
        assert not torch.allclose(want, _processor_maps(sam3_model, image, VOCAB, 0.0))


def test_phrase_batches_and_the_cpu_workaround_change_nothing(sam3_model, no_pin_memory):
    image = _image(seed=1)
    one = SAM3Segmentor(sam3_model, instance_thd=0.0, phrase_batch=1)(image, VOCAB).probs
    many = SAM3Segmentor(sam3_model, instance_thd=0.0, phrase_batch=5)(image, VOCAB).probs
    assert torch.allclose(one, many, atol=1e-5)
    seg = SAM3Segmentor(sam3_model, instance_thd=0.0)
    text, feats = seg.encode_text(["cat"]), seg.encode_image(image)
    with_box_branch = seg.sam3.forward_grounding(  # the official path, pin_memory patched
        backbone_out={**feats.crops[0][0], **text.outputs},
        find_input=_find(1),
        geometric_prompt=seg.sam3._get_dummy_prompt(1),
        find_target=None,
    )
    without = seg.phrase_outputs(feats.crops[0][0], text.outputs, 0, 1)
    for key in ("pred_logits", "presence_logit_dec", "pred_masks", "semantic_seg"):
        assert torch.equal(with_box_branch[key], without[key]), key


def _find(n):
    from sam3.model.data_misc import FindStage

    z = torch.zeros(n, dtype=torch.long)
    return FindStage(z, torch.arange(n), None, None, None, None, None)


def test_preprocess_is_the_processors_transform(sam3_model):
    from sam3.model.sam3_image_processor import Sam3Processor

    from ovdense.sam.sam3 import preprocess

    image = _image(37, 61)
    official = Sam3Processor(sam3_model, resolution=56, device="cpu").transform
    u8 = (image[0] * 255).round().to(torch.uint8)
    assert torch.equal(preprocess(image[0], 56), official(u8))


def test_labels_follow_the_rules(sam3_model):
    image = _image(seed=2)
    seg = SAM3Segmentor(sam3_model, instance_thd=0.27)
    out = seg(image, VOCAB)
    s = out.probs
    want = s.argmax(dim=1)
    want[s.amax(dim=1) <= 0] = 0  # nothing found: background
    assert torch.equal(out.labels, want)
    assert len(out.labels.unique()) > 1
    # nothing found anywhere: every pixel is background (class 0 here, found by name)
    moved = ["cat", "background", "dog"]
    empty = SAM3Segmentor(sam3_model, instance_thd=0.99)(image, moved)
    assert (empty.probs == 0).all() and (empty.labels == 1).all()
    thd = float(s.amax(dim=1).median())
    cut = seg.decode(seg.encode_image(image), seg.encode_text(VOCAB), prob_thd=thd)
    want[s.amax(dim=1) < thd] = 0
    assert torch.equal(cut.labels, want)
    # no background class: the background rule is off, names are all prompted
    no_bg = SAM3Segmentor(sam3_model, instance_thd=0.27)(image, VOCAB[1:])
    assert torch.equal(no_bg.probs, s[:, 1:]) and torch.equal(no_bg.labels, s[:, 1:].argmax(1))
    prompted = SAM3Segmentor(sam3_model, instance_thd=0.27, prompt_background=True)
    assert (prompted(image, VOCAB).probs[:, 0] > 0).any()


def test_windows_average_the_crops(sam3_model):
    image = _image(40, 64, seed=3)
    seg = SAM3Segmentor(sam3_model, instance_thd=0.0, window=40, stride=24)
    got = seg(image, VOCAB).probs[0]
    whole = SAM3Segmentor(sam3_model, instance_thd=0.0)
    acc, count = torch.zeros_like(got), torch.zeros(40, 64)
    for x1 in (0, 24):  # windows [0, 40) and [24, 64)
        acc[:, :, x1 : x1 + 40] += whole(image[..., x1 : x1 + 40], VOCAB).probs[0]
        count[:, x1 : x1 + 40] += 1
    assert torch.allclose(got, acc / count, atol=1e-5)


def test_checkpoint_round_trip_and_errors(sam3_model, tmp_path):
    from ovdense.sam.sam3 import TINY_SIZES, build_sam3
    from ovdense.utils.weights import CheckpointFormatError

    state = {f"detector.{k}": v for k, v in sam3_model.state_dict().items()}
    state["tracker.some.weight"] = torch.zeros(2)  # the video tracker's, not needed
    path = tmp_path / "sam3.pt"
    torch.save({"model": state}, path)
    loaded = build_sam3(path, sizes=TINY_SIZES)
    image = _image(seed=4)
    a = SAM3Segmentor(sam3_model, instance_thd=0.0)(image, VOCAB).probs
    b = SAM3Segmentor(loaded, instance_thd=0.0)(image, VOCAB).probs
    assert torch.equal(a, b)
    torch.save({"model": {"other.weight": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointFormatError, match="none of the image model's weights"):
        build_sam3(tmp_path / "bad.pt", sizes=TINY_SIZES)
    with pytest.raises(FileNotFoundError):
        build_sam3(tmp_path / "missing.pt", sizes=TINY_SIZES)


def test_mask_source_gives_the_processors_masks_in_order(sam3_model, no_pin_memory):
    from sam3.model.sam3_image_processor import Sam3Processor

    from ovdense.sam.sam3 import SAM3MaskSource

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)
    source = SAM3MaskSource(sam3_model, prompts=["cat", "tree"], instance_thd=0.28)
    masks = source(image)
    proc = Sam3Processor(sam3_model, resolution=56, device="cpu", confidence_threshold=0.28)
    state = proc.set_image(torch.from_numpy(image).permute(2, 0, 1))
    want = []
    for prompt in ("cat", "tree"):
        st = proc.set_text_prompt(prompt, state)
        order = torch.argsort(st["scores"], descending=True, stable=True)
        want.append(st["masks"][order, 0])
    want_t = torch.cat(want)
    assert masks.dtype == torch.bool and masks.shape == want_t.shape and masks.shape[0] > 0
    assert torch.equal(masks, want_t)
    assert source.settings()["prompts"] == ["cat", "tree"]
    none = SAM3MaskSource(sam3_model, prompts=["cat"], instance_thd=1.0)(image)
    assert none.shape == (0, 30, 44)
    with pytest.raises(ValueError, match="uint8 RGB"):
        source(image.astype(np.float32))


def test_preset_builds_and_the_runner_evaluates_it(sam3_model, tmp_path):
    cfg = LazyConfig.apply_overrides(get_config("sam3"), [TINY])
    seg = instantiate(cfg.model)
    out = seg(_image(), VOCAB)
    assert out.labels.shape == (1, 40, 50) and out.probs.shape == (1, 4, 40, 50)
    root = write_ade_layout(tmp_path / "data")
    res = run_eval(
        "sam3",
        "ade20k_150",
        data_root=str(root),
        output=tmp_path / "out",
        device="cpu",
        progress=False,
        overrides=[TINY, "model.phrase_batch=64"],
    )
    assert res["method"] == "sam3" and res["num_images"] == 4
    assert 0 <= res["metrics"]["mIoU"] <= 100


@pytest.mark.slow
def test_the_official_size_builds_and_runs_on_cpu():
    pytest.importorskip("sam3")
    from ovdense.sam.sam3 import build_sam3

    model = build_sam3(pretrained=False)
    n = sum(p.numel() for p in model.parameters())
    assert 800e6 < n < 900e6, n
    seg = SAM3Segmentor(model, instance_thd=0.0, phrase_batch=2)
    assert seg.resolution == 1008
    out = seg(_image(24, 32), ["background", "cat", "dog"])
    assert out.probs.shape == (1, 3, 24, 32) and torch.isfinite(out.probs).all()
