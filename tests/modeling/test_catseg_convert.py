"""CAT-Seg's official checkpoints (KU-CVLAB/CAT-Seg, detectron2) in ovdense: the key mapping
against the official module names, a file in the official format loading and giving the
outputs of the model it came from, clear errors for files that do not fit, and the official
sliding-window inference (``decode_order="sigmoid"``, global view, fixed size, crop resize)
against an independent transcription of ``CATSeg.inference_sliding_window``. No detectron2
needed: ``tools/parity_catseg.py`` compares with the official code itself."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ovdense.config import LazyConfig
from ovdense.model_zoo import CONFIGS_DIR
from ovdense.modeling.convert.catseg import (
    CLIP_PREFIX,
    HEAD_PREFIX,
    describe_official,
    from_official,
    to_official,
)
from ovdense.modeling.segmentors import build_catseg_segmentor
from ovdense.modeling.segmentors.catseg import catseg_head_for
from ovdense.utils.weights import CheckpointFormatError

TINY_HEAD = {
    "hidden_dim": 32,
    "window_size": 2,
    "pad_len": 8,
    "guidance_dim": 16,
    "decoder_dims": (32, 16),
    "decoder_guidance_dims": (16, 16),
    "decoder_guidance_proj_dims": (8, 8),
    "class_chunk": 2,
}
NAMES = ["red circle", "blue square", "green star", "sky", "grass"]

#: The official Aggregator's parameter names of one layer ``{i}`` and of the whole model,
#: written out from cat_seg/modeling/transformer/model.py (``AggregatorLayer`` ->
#: ``SwinTransformerBlockWrapper`` (``block_1``, ``block_2``, timm ``Mlp`` fc1/fc2) and
#: ``ClassTransformerLayer`` (``attention.{q,k,v}``, ``MLP``, ``padding_*``), ``Up`` with
#: ``DoubleConv``) and cat_seg_model.py (``upsample1/2``).
OFFICIAL_LAYER = [
    *[
        f"layers.{{i}}.swin_block.block_{b}.{part}.{wb}"
        for b in (1, 2)
        for part in (
            "norm1",
            "attn.q",
            "attn.k",
            "attn.v",
            "attn.proj",
            "norm2",
            "mlp.fc1",
            "mlp.fc2",
        )
        for wb in ("weight", "bias")
    ],
    "layers.{i}.swin_block.guidance_norm.weight",
    "layers.{i}.swin_block.guidance_norm.bias",
    *[
        f"layers.{{i}}.attention.{part}.{wb}"
        for part in (
            "attention.q",
            "attention.k",
            "attention.v",
            "MLP.0",
            "MLP.2",
            "norm1",
            "norm2",
        )
        for wb in ("weight", "bias")
    ],
    "layers.{i}.attention.padding_tokens",
    "layers.{i}.attention.padding_guidance",
]
OFFICIAL_TOP = [
    "conv1.weight",
    "conv1.bias",
    "guidance_projection.0.weight",
    "guidance_projection.0.bias",
    "text_guidance_projection.0.weight",
    "text_guidance_projection.0.bias",
    *[f"decoder_guidance_projection.{j}.0.{wb}" for j in (0, 1) for wb in ("weight", "bias")],
    *[f"decoder{j}.up.{wb}" for j in (1, 2) for wb in ("weight", "bias")],
    *[f"decoder{j}.conv.double_conv.{m}.weight" for j in (1, 2) for m in (0, 1, 3, 4)],
    *[f"decoder{j}.conv.double_conv.{m}.bias" for j in (1, 2) for m in (1, 4)],
    "head.weight",
    "head.bias",
]


def randomise(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return module


def tiny_official(tiny_clip_factory, seed: int = 3) -> tuple[nn.Module, nn.Module, dict]:
    """A tiny CLIP and head with random weights and their official-format state dict (with
    the shifted Swin blocks' attention-mask buffers, as the official model saves them)."""
    clip = tiny_clip_factory(seed=seed)
    head = randomise(catseg_head_for(clip, 1, **TINY_HEAD), seed)
    state = {f"clip.{k}": v for k, v in clip.state_dict().items()}
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    official = to_official(state)
    for i in range(len(head.spatial)):
        official[HEAD_PREFIX + f"layers.{i}.swin_block.block_2.attn_mask"] = torch.zeros(4, 4, 4)
    return clip, head, official


def test_official_names_match_the_official_modules(tiny_clip_factory):
    clip, head, official = tiny_official(tiny_clip_factory)
    head_keys = {k[len(HEAD_PREFIX) :] for k in official if k.startswith(HEAD_PREFIX)}
    want = {k.format(i=i) for k in OFFICIAL_LAYER for i in range(2)} | set(OFFICIAL_TOP)
    want |= {f"layers.{i}.swin_block.block_2.attn_mask" for i in range(2)}
    assert head_keys == want
    assert {k for k in official if not k.startswith("sem_seg_head.")} == {
        f"upsample{j}.{wb}" for j in (1, 2) for wb in ("weight", "bias")
    }
    clip_keys = {k[len(CLIP_PREFIX) :] for k in official if k.startswith(CLIP_PREFIX)}
    # the official CLIP splits every packed projection (model_vpt.Attention), in both towers
    for tower in ("visual.transformer", "transformer"):
        for w in ("q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias"):
            assert f"{tower}.resblocks.0.attn.{w}" in clip_keys
        assert f"{tower}.resblocks.0.attn.in_proj_weight" not in clip_keys
    for name in ("visual.proj", "visual.conv1.weight", "token_embedding.weight", "logit_scale"):
        assert name in clip_keys
    # shapes as the official modules hold them: padding tokens [1, 1, C], q/k/v [C, C]
    pad = official[HEAD_PREFIX + "layers.0.attention.padding_tokens"]
    assert pad.shape == (1, 1, TINY_HEAD["hidden_dim"])
    q = official[CLIP_PREFIX + "visual.transformer.resblocks.0.attn.q_proj_weight"]
    assert q.shape == (64, 64)
    packed = clip.state_dict()["visual.transformer.resblocks.0.attn.in_proj_weight"]
    assert torch.equal(q, packed[:64])


def test_from_official_inverts_to_official_and_reads_the_sizes(tiny_clip_factory):
    clip, head, official = tiny_official(tiny_clip_factory)
    back = from_official(official)
    want = {f"clip.{k}": v for k, v in clip.state_dict().items()}
    want.update({f"head.{k}": v for k, v in head.state_dict().items()})
    assert set(back) == set(want)
    assert all(torch.equal(back[k], want[k]) for k in want)
    info = describe_official(official)
    assert info.clip_model is None and (info.vision_width, info.patch_size) == (64, 8)
    assert info.head_kwargs["hidden_dim"] == 32 and info.head_kwargs["window_size"] == 2
    assert info.head_kwargs["decoder_guidance_proj_dims"] == (8, 8)


def _segmentor(clip, head=None, checkpoint=None, **kw):
    args = dict(
        head_kwargs=TINY_HEAD,
        templates="catseg",
        fixed_size=80,
        window=48,
        stride=32,
        global_view=True,
        crop_resize=32,
        decode_order="sigmoid",
        window_batch_size=3,
    )
    args.update(kw)
    return build_catseg_segmentor(clip, checkpoint=checkpoint, head=head, **args)


def test_official_file_loads_and_gives_the_outputs_of_its_model(tiny_clip_factory, tmp_path):
    clip, head, official = tiny_official(tiny_clip_factory)
    path = tmp_path / "model_final.pth"
    torch.save({"model": official, "iteration": 7}, path)  # detectron2's checkpoint layout
    fresh = tiny_clip_factory(seed=11)
    loaded = _segmentor(fresh, checkpoint=str(path))
    reference = _segmentor(clip, head=head)
    for k, v in clip.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    images = torch.rand(1, 3, 50, 70, generator=torch.Generator().manual_seed(0))
    a, b = loaded(images, NAMES), reference(images, NAMES)
    assert a.probs is not None and b.probs is not None
    assert torch.allclose(a.probs, b.probs, atol=1e-6)
    assert torch.equal(a.labels, b.labels)


def test_official_sliding_inference_matches_a_transcription(tiny_clip_factory):
    """CATSeg.inference_sliding_window (scaled: out_res 80, kernel 48, stride 32, CLIP input 32)
    written out with nn.Unfold / nn.Fold, against the segmentor's ``"sigmoid"`` order."""
    clip, head, _ = tiny_official(tiny_clip_factory)
    seg = _segmentor(clip, head=head)
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 50, 70, generator=g)
    out = seg(image, NAMES)
    with torch.no_grad():
        kernel, stride, res = 48, 32, [80, 80]
        unfold = nn.Unfold(kernel_size=kernel, stride=stride)
        fold = nn.Fold(res, kernel_size=kernel, stride=stride)
        big = F.interpolate(image, size=res, mode="bilinear", align_corners=False)[0]
        crops = unfold(big).T.reshape(-1, 3, kernel, kernel)
        whole = F.interpolate(image, size=(kernel, kernel), mode="bilinear", align_corners=False)
        x = seg.backbone.normalize(torch.cat([crops, whole]))
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        feats = seg.backbone(x)
        inter = [feats.intermediates[f"block{i}"] for i in head.intermediate_layers]
        embeds = seg.encode_text(NAMES).template_embeds
        logits = head(feats.dense * feats.dense_norm, embeds, inter)
        probs = F.interpolate(logits, size=kernel, mode="bilinear", align_corners=False).sigmoid()
        glob = F.interpolate(probs[-1:], size=res, mode="bilinear", align_corners=False)
        ones = torch.ones([1, *res])
        wins = fold(probs[:-1].flatten(1).T) / fold(unfold(ones))
        want = F.interpolate((wins + glob) / 2, size=(50, 70), mode="bilinear")[0]
    assert out.probs is not None
    assert torch.allclose(out.probs[0], want, atol=1e-5)
    assert torch.equal(out.labels[0], want.argmax(0))


def test_labels_only_decode_equals_the_full_one(tiny_clip_factory):
    clip, head, _ = tiny_official(tiny_clip_factory)
    seg = _segmentor(clip, head=head)
    image = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    text = seg.encode_text(NAMES)
    feats = seg.encode_image(image)
    full = seg.decode(feats, text)
    lean = seg.decode(feats, text, return_probs=False, name_chunk=2)
    assert lean.probs is None and torch.equal(full.labels, lean.labels)
    assert len(full.labels.unique()) > 1


def test_files_that_do_not_fit_say_what_was_expected(tiny_clip_factory, tmp_path):
    clip, head, official = tiny_official(tiny_clip_factory)
    # another method's file (CLIP-DINOiser's heads)
    other = tmp_path / "last.pt"
    torch.save({"obj_proj.weight": torch.zeros(2, 2), "bkg_decoder.weight": torch.zeros(1)}, other)
    with pytest.raises(CheckpointFormatError, match="not a CAT-Seg checkpoint.*found unexpected"):
        _segmentor(clip, checkpoint=str(other))
    # a truncated file
    good = tmp_path / "good.pth"
    torch.save({"model": official}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointFormatError, match="cut.pth.*truncated"):
        _segmentor(clip, checkpoint=str(cut))
    # a CLIP of another size
    wide = tiny_clip_factory(
        seed=1,
        vision_cfg={"image_size": 32, "layers": 3, "width": 96, "head_width": 16, "patch_size": 8},
    )
    with pytest.raises(
        CheckpointFormatError, match=r"ViT \(width 64, patch 8, 3 blocks\).*width 96"
    ):
        _segmentor(wide, checkpoint=str(good))
    # an incomplete official file
    partial = {k: v for k, v in official.items() if not k.endswith("k_proj_weight")}
    with pytest.raises(CheckpointFormatError, match="q/k/v"):
        _segmentor(clip, checkpoint=partial)
    partial = {k: v for k, v in official.items() if "decoder1" not in k}
    with pytest.raises(CheckpointFormatError, match="decoder1.*missing"):
        _segmentor(clip, checkpoint=partial)


def _fake_vitl14() -> dict[str, torch.Tensor]:
    """The tensors that name an official checkpoint's size, at the ViT-L/14-336 model's
    shapes (the rest tiny: only the sizes are read before the error)."""
    sd = {CLIP_PREFIX + "visual.conv1.weight": torch.zeros(1024, 3, 14, 14)}
    sd[CLIP_PREFIX + "visual.proj"] = torch.zeros(1024, 768)
    for i in range(24):
        sd[CLIP_PREFIX + f"visual.transformer.resblocks.{i}.ln_1.weight"] = torch.zeros(1)
    for name, shape in {
        "conv1.weight": (128, 1, 7, 7),
        "guidance_projection.0.weight": (128, 768, 3, 3),
        "decoder_guidance_projection.0.0.weight": (32, 256, 3, 3),
        "decoder_guidance_projection.1.0.weight": (16, 128, 3, 3),
        "decoder1.conv.double_conv.0.weight": (64, 128, 3, 3),
        "decoder2.conv.double_conv.0.weight": (32, 64, 3, 3),
    }.items():
        sd[HEAD_PREFIX + name] = torch.zeros(shape)
    return sd


def test_a_released_model_of_the_other_size_names_the_preset_to_use():
    info = describe_official(_fake_vitl14())
    assert (info.clip_model, info.official_name) == ("ViT-L-14-336", "ViT-L/14@336px")
    with pytest.raises(
        CheckpointFormatError, match="ViT-L/14@336px.*builds ViT-B-16.*catseg_vitl14"
    ):
        build_catseg_segmentor(checkpoint={"model": _fake_vitl14()}, clip_model="ViT-B-16")


def test_presets_follow_the_official_evaluation():
    b = LazyConfig.load(str(CONFIGS_DIR / "seg" / "catseg_vitb16.py")).model
    assert (b.fixed_size, b.window, b.stride, b.global_view) == (640, 384, 256, True)
    assert (b.decode_order, b.templates, b.crop_resize, b.clip) == ("sigmoid", "catseg", None, None)
    assert b.head_kwargs.eval_pool_size == 1 and b.clip_model == "ViT-B-16"
    large = LazyConfig.load(str(CONFIGS_DIR / "seg" / "catseg_vitl14.py")).model
    assert (large.clip_model, large.crop_resize, large.window) == ("ViT-L-14-336", 336, 384)


def test_convert_command_writes_a_file_that_loads(tiny_clip_factory, tmp_path):
    from ovdense.cli.convert_catseg import main

    clip, head, official = tiny_official(tiny_clip_factory)
    src, dst = tmp_path / "model_final.pth", tmp_path / "catseg_ovdense.pt"
    torch.save({"model": official}, src)
    assert main([str(src), str(dst)]) == 0
    state = torch.load(dst, weights_only=True)
    assert all(k.startswith(("head.", "clip.")) for k in state)
    seg = _segmentor(tiny_clip_factory(seed=5), checkpoint=str(dst))
    assert torch.equal(seg.head.out.weight, head.out.weight)
