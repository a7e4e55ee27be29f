"""Vision foundation model wrappers against hand computations (tiny random models, no downloads)."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT

from ovdense.modeling.backbones.vfm import (
    DINOFeatures,
    DINOv2Features,
    SAMFeatures,
    build_vfm,
    list_vfms,
)
from ovdense.modeling.clip import WeightsUnavailableError
from ovdense.modeling.vfm import timm_vit as vfm_module

TINY_VIT = {"img_size": 32, "embed_dim": 24, "depth": 2, "num_heads": 2}


def _randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def _tiny_dino(seed=0, **kw):
    model = timm.create_model(
        "vit_base_patch8_224.dino", pretrained=False, dynamic_img_size=True, **{**TINY_VIT, **kw}
    )
    return _randomise(model, seed)


def _tiny_dinov2(seed=0):
    model = timm.create_model(
        "vit_base_patch14_reg4_dinov2.lvd142m",
        pretrained=False,
        dynamic_img_size=True,
        img_size=28,
        embed_dim=24,
        depth=2,
        num_heads=2,
    )
    return _randomise(model, seed)


def _tiny_sam_encoder(seed=0):
    torch.manual_seed(seed)
    enc = ImageEncoderViT(
        img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2, out_chans=16
    )
    return _randomise(enc, seed)


def _layer_norm(x, ln):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _normalize(images01, vfm):
    mean = torch.tensor(vfm.mean).view(1, 3, 1, 1)
    std = torch.tensor(vfm.std).view(1, 3, 1, 1)
    return (images01 - mean) / std


def test_registry_names_and_unknown_name_lists_choices():
    assert {"dino_vits16", "dino_vitb16", "dino_vitb8", "dinov2_vitb14_reg", "sam_vit_b"} <= set(
        list_vfms()
    )
    with pytest.raises(KeyError) as err:
        build_vfm("dino_vitb9")
    msg = str(err.value)
    assert "Did you mean 'dino_vitb8'" in msg and "sam_vit_b" in msg and "dinov2_vitb14_reg" in msg


def test_dino_keys_equal_hand_computation_at_native_size():
    model = _tiny_dino()
    vfm = DINOFeatures(model=model)
    images01 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    # the input of the last block, from timm's own forward
    seen = {}
    hook = model.blocks[-1].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    model.forward_features(_normalize(images01, vfm))
    hook.remove()
    x = seen["x"]
    blk = model.blocks[-1]
    c = x.shape[-1]
    w_k = blk.attn.qkv.weight[c : 2 * c]
    b_k = blk.attn.qkv.bias[c : 2 * c]
    keys = _layer_norm(x, blk.norm1) @ w_k.T + b_k  # [B, 1 + 16, C], heads concatenated
    expected = keys[:, 1:].reshape(2, 4, 4, c).permute(0, 3, 1, 2)
    got = vfm(images01)
    assert got.shape == (2, 24, 4, 4) and vfm.embed_dim == 24 and vfm.patch_size == 8
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # query / value variants come from the same projection
    values = _layer_norm(x, blk.norm1) @ blk.attn.qkv.weight[2 * c :].T + blk.attn.qkv.bias[2 * c :]
    got_v = DINOFeatures(model=model, feature="value")(images01)
    torch.testing.assert_close(got_v, values[:, 1:].reshape(2, 4, 4, c).permute(0, 3, 1, 2))


def test_dino_official_position_interpolation_off_the_native_grid():
    """At a non-native grid the keys follow the official DINO ``interpolate_pos_encoding``
    (bicubic, scale_factor (g + 0.1) / g0); ``pos_interp="timm"`` follows timm's own forward."""
    model = _tiny_dino(seed=2)
    images01 = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(3))
    vfm = DINOFeatures(model=model)
    x = _normalize(images01, vfm)
    # official DINO prepare_tokens, written out
    tok = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tok = torch.cat([model.cls_token.expand(1, -1, -1), tok], dim=1)
    pos = model.pos_embed
    n = pos.shape[1] - 1
    dim = pos.shape[-1]
    w0, h0 = 40 // 8 + 0.1, 48 // 8 + 0.1
    patch_pos = F.interpolate(
        pos[:, 1:].reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2),
        scale_factor=(h0 / math.sqrt(n), w0 / math.sqrt(n)),
        mode="bicubic",
    )
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
    tok = tok + torch.cat([pos[:, :1], patch_pos], dim=1)
    for blk in model.blocks[:-1]:
        tok = blk(tok)
    blk = model.blocks[-1]
    keys = blk.attn.qkv(blk.norm1(tok)).chunk(3, dim=-1)[1]
    expected = keys[:, 1:].reshape(1, 6, 5, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(vfm(images01), expected, atol=1e-5, rtol=1e-5)

    # timm mode = timm's own dynamic-size forward
    seen = {}
    hook = blk.attn.qkv.register_forward_hook(lambda m, a, out: seen.setdefault("qkv", out))
    model.forward_features(x)
    hook.remove()
    expected_timm = seen["qkv"].chunk(3, dim=-1)[1][:, 1:].reshape(1, 6, 5, -1).permute(0, 3, 1, 2)
    got_timm = DINOFeatures(model=model, pos_interp="timm")(images01)
    torch.testing.assert_close(got_timm, expected_timm, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got_timm, expected, atol=1e-4)  # the two rules really differ


def test_dinov2_drops_cls_and_register_tokens():
    model = _tiny_dinov2()
    vfm = DINOv2Features(model=model)
    assert vfm.num_prefix_tokens == 5 and vfm.patch_size == 14
    images01 = torch.rand(2, 3, 42, 56, generator=torch.Generator().manual_seed(4))
    tokens = model.forward_features(_normalize(images01, vfm))  # [B, 5 + 3 * 4, C], normed
    assert tokens.shape[1] == 5 + 12
    expected = tokens[:, 5:].reshape(2, 3, 4, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(vfm(images01), expected, atol=1e-5, rtol=1e-5)


def test_vit_pads_with_zeros_after_normalisation():
    vfm = DINOFeatures(model=_tiny_dino(seed=5))
    images01 = torch.rand(1, 3, 37, 50, generator=torch.Generator().manual_seed(6))
    got = vfm(images01)
    assert got.shape[-2:] == (5, 7) == vfm.output_grid(37, 50)
    # padding with the mean colour = zeros after normalisation
    padded = torch.tensor(vfm.mean).view(1, 3, 1, 1).expand(1, 3, 40, 56).clone()
    padded[:, :, :37, :50] = images01
    torch.testing.assert_close(got, vfm(padded), atol=1e-5, rtol=1e-5)


def test_sam_features_cover_the_valid_region_of_a_non_square_image():
    enc = _tiny_sam_encoder()
    vfm = SAMFeatures(image_encoder=enc)
    assert (vfm.patch_size, vfm.embed_dim, vfm.img_size) == (8, 16, 64)
    images01 = torch.rand(1, 3, 30, 50, generator=torch.Generator().manual_seed(7))
    # SamPredictor: long side to 64 (30 * 64 / 50 = 38.4 -> 38), normalise, pad bottom / right
    assert vfm.input_size(30, 50) == (38, 64)
    x = F.interpolate(images01, size=(38, 64), mode="bilinear", align_corners=False, antialias=True)
    x = F.pad(_normalize(x, vfm), (0, 0, 0, 64 - 38))
    full = enc(x)  # [1, 16, 8, 8]
    got = vfm(images01)
    assert got.shape == (1, 16, 5, 8)  # ceil(38 / 8) = 5 rows cover the image
    torch.testing.assert_close(got, full[:, :, :5], atol=1e-5, rtol=1e-5)
    assert vfm(torch.rand(2, 3, 20, 20)).shape == (2, 16, 8, 8)  # square: the whole map


@pytest.mark.parametrize("hw", [(1, 1), (7, 9), (33, 17), (16, 64)])
def test_any_image_size_works(hw):
    h, w = hw
    images01 = torch.rand(1, 3, h, w)
    for vfm in (
        DINOFeatures(model=_tiny_dino()),
        DINOv2Features(model=_tiny_dinov2()),
        SAMFeatures(image_encoder=_tiny_sam_encoder()),
    ):
        out = vfm(images01)
        assert out.shape == (1, vfm.embed_dim, *vfm.output_grid(h, w))
        assert torch.isfinite(out).all()


def test_build_vfm_tiny_without_download_frozen_and_kwargs():
    vfm = build_vfm("dino_vitb8", pretrained=False, **TINY_VIT)
    assert isinstance(vfm, DINOFeatures) and vfm.feature == "key" and not vfm.training
    assert not any(p.requires_grad for p in vfm.parameters())
    assert build_vfm("dino_vitb16", pretrained=False, feature="value", **TINY_VIT).patch_size == 16
    v2 = build_vfm("dinov2_vitb14_reg", pretrained=False, img_size=28, embed_dim=24, depth=1)
    assert isinstance(v2, DINOv2Features) and v2.num_prefix_tokens == 5
    with pytest.raises(ValueError, match="feature must be one of"):
        build_vfm("dino_vitb8", pretrained=False, feature="keys", **TINY_VIT)


def test_checkpoint_file_loads_official_dino_layout(tmp_path):
    src = _tiny_dino(seed=8)
    # official DINO training checkpoints nest the backbone under teacher / "backbone."
    state = {f"backbone.{k}": v for k, v in src.state_dict().items()}
    path = tmp_path / "dino.pth"
    torch.save({"teacher": state, "epoch": 1}, path)
    vfm = build_vfm("dino_vitb8", checkpoint=path, **TINY_VIT)
    images01 = torch.rand(1, 3, 24, 40)
    torch.testing.assert_close(vfm(images01), DINOFeatures(model=src)(images01))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_vfm("dino_vitb8", checkpoint=tmp_path / "missing.pth", **TINY_VIT)


def test_sam_checkpoint_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="checkpoint=.*sam_vit_b_01ec64.pth"):
        build_vfm("sam_vit_b")
    missing = tmp_path / "sam_vit_b_01ec64.pth"
    with pytest.raises(FileNotFoundError) as err:
        build_vfm("sam_vit_b", checkpoint=missing)
    assert str(missing) in str(err.value)
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in str(err.value)


def test_offline_download_failure_tells_to_pass_a_checkpoint(monkeypatch):
    import huggingface_hub

    # nothing cached, offline: fails at once, never reaching the network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(WeightsUnavailableError, match="checkpoint="):
        build_vfm("dino_vits16")

    # a download that fails anyway (e.g. firewall) gives the same advice
    def fail(*args, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(vfm_module, "_timm_weights_reachable", lambda name: None)
    monkeypatch.setattr(timm, "create_model", fail)
    with pytest.raises(WeightsUnavailableError, match="checkpoint="):
        build_vfm("dino_vitb16")


def test_wrappers_reject_wrong_modules():
    with pytest.raises(TypeError, match="timm VisionTransformer"):
        DINOFeatures(model=torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="ImageEncoderViT"):
        SAMFeatures(image_encoder=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="images must be"):
        DINOFeatures(model=_tiny_dino())(torch.rand(3, 32, 32))


def test_sam_encoder_is_built_as_segment_anything_builds_it():
    from segment_anything import sam_model_registry

    from ovdense.modeling.vfm.sam import sam_image_encoder

    torch.manual_seed(0)
    ours = sam_image_encoder("vit_b")
    torch.manual_seed(0)
    theirs = sam_model_registry["vit_b"](checkpoint=None).image_encoder
    assert str(ours) == str(theirs)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same modules in the same order
    tiny = build_vfm(
        "sam_vit_b", pretrained=False, img_size=64, patch_size=8, embed_dim=32, depth=1
    )
    assert isinstance(tiny, SAMFeatures) and tiny.patch_size == 8 and tiny.img_size == 64
    with pytest.raises(ValueError, match="SAM kind"):
        sam_image_encoder("vit_x")
