"""CLIP-DINOiser head and segmentor against explicit re-computations (tiny random models)."""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ovdense import get_config
from ovdense.config import LazyCall as L
from ovdense.config import instantiate
from ovdense.modeling.clip import load_clip
from ovdense.modeling.refiners import CLIPDINOiserHead
from ovdense.modeling.segmentors import CLIPDINOiserFeatures, CLIPDINOiserSegmentor
from ovdense.modeling.segmentors.clip_dinoiser import apply_background_rule

WIDTH = 64  # tiny ViT width (tests/conftest.py)


def _head(seed: int = 0, **kw) -> CLIPDINOiserHead:
    torch.manual_seed(seed)
    head = CLIPDINOiserHead(WIDTH, **kw)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return head.eval()


def _seg(clip, head=None, **kw):
    kw.setdefault("templates", "single")
    kw.setdefault("short_side", 40)
    kw.setdefault("window", 32)
    kw.setdefault("stride", 16)
    return CLIPDINOiserSegmentor(clip, head=head if head is not None else _head(), **kw)


def _official(head: CLIPDINOiserHead, epoch: int = 3) -> dict:
    return {
        "epoch": epoch,
        "model_state_dict": {k: v.clone() for k, v in head.state_dict().items()},
    }


def test_correlations_match_conv_output():
    head = _head()
    feats = torch.randn(2, WIDTH, 3, 4)
    corr = head.correlations(feats)
    z = head.obj_proj(feats)  # [2, 256, 3, 4]
    assert corr.shape == (2, 12, 12)
    for b in range(2):
        for i in range(12):
            for j in range(12):
                zi = z[b, :, i // 4, i % 4]
                zj = z[b, :, j // 4, j % 4]
                want = (zi @ zj) / (zi.norm() * zj.norm())
                torch.testing.assert_close(corr[b, i, j], want, atol=1e-5, rtol=1e-5)


def test_pool_equals_explicit_weighted_average():
    head = _head(gamma=0.2)
    b, d, h, w = 2, 5, 2, 3
    n = h * w
    dense = torch.randn(b, d, h, w)
    corr = torch.rand(b, n, n) * 1.2 - 0.2
    corr[1, 4] = 0.1  # a row where nothing reaches gamma: the pixel keeps its feature
    out = head.pool(dense, corr)
    want = torch.zeros_like(dense)
    for bi in range(b):
        for i in range(n):
            num, den = torch.zeros(d), 0.0
            for j in range(n):
                c = float(corr[bi, i, j])
                if c >= 0.2:
                    num += c * dense[bi, :, j // w, j % w]
                    den += c
            want[bi, :, i // w, i % w] = num / den if den > 0 else dense[bi, :, i // w, i % w]
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :, 1, 1], dense[1, :, 1, 1])
    with pytest.raises(ValueError, match="corr must be"):
        head.pool(dense, corr[:, :5])


def test_background_is_sigmoid_of_normalised_feats():
    head = _head()
    feats = torch.randn(1, WIDTH, 2, 2)
    want = torch.sigmoid(
        torch.einsum(
            "bchw,c->bhw",
            feats / feats.norm(dim=1, keepdim=True),
            head.bkg_decoder.weight[0, :, 0, 0],
        )
        + head.bkg_decoder.bias
    )[:, None]
    torch.testing.assert_close(head.background(feats), want, atol=1e-6, rtol=1e-5)


def test_ln2_hook_captures_block_minus_3(tiny_clip):
    seg = _seg(tiny_clip)
    bb = seg.backbone
    assert bb.feature_block == 0  # 3 blocks: block -3 is block 0
    torch.manual_seed(1)
    images = bb.normalize(torch.rand(2, 3, 32, 24))
    _, feats, grid = bb.block_features(images)
    x, grid2 = bb.embed_tokens(images)
    assert grid == grid2 == (4, 3)
    blk = bb.visual.transformer.resblocks[0]
    with torch.no_grad():
        h = blk.ln_1(x)
        y = x + blk.ls_1(blk.attn(h, h, h, need_weights=False)[0])
        want = blk.ln_2(y)[:, 1:].transpose(1, 2).reshape(2, WIDTH, 4, 3)
    torch.testing.assert_close(feats, want, atol=1e-5, rtol=1e-5)
    # the dense features (backbone, then refiner) are the pooled, normalised MaskCLIP
    # projection; the saliency is the refiner's auxiliary map "background"
    out, aux = seg.refiner(bb(images), images)
    tokens, _, _ = bb.forward_tokens(images)
    proj = bb.project(tokens)[:, 1:].transpose(1, 2).reshape(2, -1, 4, 3)
    head = seg.dinoiser_head
    pooled = F.normalize(head.pool(proj, head.correlations(want)), dim=1)
    torch.testing.assert_close(out.dense, pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(aux["background"], head.background(want))


def test_background_rule_hand_made():
    probs = torch.tensor([[[[0.995, 0.6, 0.6, 0.3]], [[0.005, 0.4, 0.4, 0.7]]]])  # [1, 2, 1, 4]
    sal = torch.tensor([[[[0.2, 0.2, 0.8, 0.49]]]])
    labels = torch.tensor([[[1, 1, 1, 2]]])
    out = apply_background_rule(labels, probs, sal, delta=0.99, background_index=0)
    assert out.tolist() == [[[1, 0, 1, 0]]]
    assert labels.tolist() == [[[1, 1, 1, 2]]]  # input untouched


def test_segmentor_background_rule(tiny_clip):
    head = _head(delta=1.0)
    with torch.no_grad():
        head.bkg_decoder.bias.fill_(-100.0)  # nothing salient
    seg = _seg(tiny_clip, head=head)
    torch.manual_seed(2)
    img = torch.rand(1, 3, 40, 56)
    feats = seg.encode_image(img)
    out = seg.decode(feats, seg.encode_text(["background", "cat", "dog"]))
    assert (out.labels == 0).all()  # every max prob < 1 and saliency ~ 0
    # without a background class the rule is off (auto) or an error (forced)
    off = seg.decode(feats, seg.encode_text(["cat", "dog"]))
    plain = super(CLIPDINOiserSegmentor, seg).decode(feats, seg.encode_text(["cat", "dog"]))
    assert torch.equal(off.labels, plain.labels)
    seg.background_rule = True
    with pytest.raises(ValueError, match="background class"):
        seg.decode(feats, seg.encode_text(["cat", "dog"]))
    seg.background_rule = False
    out = seg.decode(feats, seg.encode_text(["background", "cat", "dog"]))
    plain = super(CLIPDINOiserSegmentor, seg).decode(
        feats, seg.encode_text(["background", "cat", "dog"])
    )
    assert torch.equal(out.labels, plain.labels)


def test_background_map_is_window_average(tiny_clip):
    seg = _seg(tiny_clip)
    torch.manual_seed(3)
    feats = seg.encode_image(torch.rand(2, 3, 40, 56))
    assert isinstance(feats, CLIPDINOiserFeatures)
    n_win = len(feats.windows)
    assert feats.background.shape == (n_win * 2, 1, 4, 4)
    bmap = seg.background_map(feats)
    assert bmap.shape == (2, 1, 40, 56)
    hr, wr = feats.resized_size
    acc = torch.zeros(2, 1, hr, wr)
    cnt = torch.zeros(hr, wr)
    for k, (y1, y2, x1, x2) in enumerate(feats.windows):
        for bi in range(2):
            m = feats.background[k * 2 + bi : k * 2 + bi + 1]
            acc[bi, :, y1:y2, x1:x2] += F.interpolate(m, size=(y2 - y1, x2 - x1), mode="bilinear")[
                0
            ]
        cnt[y1:y2, x1:x2] += 1
    want = F.interpolate(acc / cnt, size=(40, 56), mode="bilinear")
    torch.testing.assert_close(bmap, want, atol=1e-6, rtol=1e-5)


def test_official_checkpoint_loads_and_changes_outputs(tiny_clip, tmp_path):
    other = _head(seed=5)
    path = tmp_path / "last.pt"
    torch.save(_official(other), path)
    head = _head(seed=0)
    torch.manual_seed(4)
    img = torch.rand(1, 3, 40, 40)
    vocab = ["background", "cat", "dog", "tree"]
    seg = _seg(tiny_clip, head=head)
    before = seg.encode_image(img)
    head.load_official(path)
    for k, v in other.state_dict().items():
        assert torch.equal(head.state_dict()[k], v)
    after = seg.encode_image(img)
    assert not torch.allclose(before.dense, after.dense)
    assert not torch.allclose(before.background, after.background)
    # building from the file equals building with the head object
    from_file = CLIPDINOiserSegmentor(
        tiny_clip, head_checkpoint=path, templates="single", short_side=40, window=32, stride=16
    )
    from_obj = _seg(tiny_clip, head=other)
    a, b = from_file(img, vocab), from_obj(img, vocab)
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.probs, b.probs)
    # a bare state dict works too
    bare = tmp_path / "bare.pth"
    torch.save(other.state_dict(), bare)
    assert torch.equal(_head(seed=9).load_official(bare).obj_proj.weight, other.obj_proj.weight)


def test_checkpoint_errors(tmp_path):
    head = _head()
    small = CLIPDINOiserHead(32)
    torch.save(_official(small), tmp_path / "w32.pt")
    with pytest.raises(ValueError, match="width 64") as err:
        head.load_official(tmp_path / "w32.pt")
    assert "obj_proj.weight" in str(err.value)
    state = _official(head)
    del state["model_state_dict"]["bkg_decoder.bias"]
    state["model_state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "keys.pt")
    with pytest.raises(ValueError, match=r"missing keys \['bkg_decoder.bias'\].*extra.weight"):
        head.load_official(tmp_path / "keys.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="Could not read"):
        head.load_official(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="last.pt"):
        head.load_official(tmp_path / "missing.pt")


def test_segmentor_without_head_refuses(tiny_clip):
    seg = CLIPDINOiserSegmentor(tiny_clip, templates="single", short_side=40, window=32, stride=16)
    with pytest.raises(ValueError, match="last.pt"):
        seg.encode_image(torch.rand(1, 3, 40, 40))


@pytest.mark.parametrize("order", ["paper", "ovdense"])
def test_segmentor_end_to_end(tiny_clip, order):
    seg = _seg(tiny_clip, decode_order=order)
    assert seg.decode_order == order and seg.pad_to_patch == (order == "paper")
    assert seg.backbone.strategy.name == "maskclip" and seg.backbone.pos_interp == "size"
    torch.manual_seed(6)
    img = torch.rand(2, 3, 30, 45)
    vocab = ["background", "cat", "dog"]
    out = seg(img, vocab)
    assert out.labels.shape == (2, 30, 45) and out.probs.shape == (2, 3, 30, 45)
    if order == "ovdense":
        torch.testing.assert_close(out.probs.sum(dim=1), torch.ones(2, 30, 45))
    else:  # the official rule sets class 0 to 1.0 without renormalising
        assert (out.probs.sum(dim=1) > 1 - 1e-5).all()
        no_bg = seg(img, ["cat", "dog", "tree"])
        torch.testing.assert_close(no_bg.probs.sum(dim=1), torch.ones(2, 30, 45))
    again = seg(img, vocab)
    assert torch.equal(out.labels, again.labels) and torch.equal(out.probs, again.probs)
    whole = _seg(tiny_clip, window=None, stride=None, decode_order=order)
    w_out = whole(img, vocab)
    assert w_out.labels.shape == out.labels.shape and w_out.probs.shape == out.probs.shape
    feats = whole.encode_image(img)
    assert len(feats.windows) == 1 and feats.dense.shape[0] == 2
    # streaming decoding (no probs) gives the same labels
    lean = seg.decode(seg.encode_image(img), seg.encode_text(vocab), return_probs=False)
    assert lean.probs is None and torch.equal(lean.labels, out.labels)


def test_preset_builds(tiny_clip_config, tmp_path):
    cfg = get_config("seg/clip_dinoiser_vitb16")
    assert cfg.model.clip.pretrained == "laion2b_s34b_b88k" and cfg.model.head_checkpoint is None
    assert (cfg.model.short_side, cfg.model.window, cfg.model.stride) == (448, 448, 224)
    assert cfg.model.logit_scale == 100.0
    assert cfg.model.decode_order == "paper"
    cfg.model.clip = L(load_clip)(config=tiny_clip_config, seed=0)
    torch.save(_official(_head()), tmp_path / "last.pt")
    cfg.model.head_checkpoint = str(tmp_path / "last.pt")
    seg = instantiate(cfg.model)
    assert isinstance(seg, CLIPDINOiserSegmentor)
    assert torch.equal(seg.dinoiser_head.obj_proj.weight, _head().obj_proj.weight)


def test_paper_protocol_uses_the_official_order():
    from ovdense.evaluation.runner import resolve_eval_config

    for dataset in ("voc21", "context60", "ade20k"):
        cfg = resolve_eval_config("clip_dinoiser", dataset, protocol="paper")
        assert cfg.model.decode_order == "paper"
    cfg = resolve_eval_config("clip_dinoiser", "voc21", overrides=["model.decode_order=ovdense"])
    assert cfg.model.decode_order == "ovdense"


def _tool():
    path = Path(__file__).resolve().parents[2] / "tools" / "convert_clip_dinoiser.py"
    spec = importlib.util.spec_from_file_location("convert_clip_dinoiser", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_convert_tool(tmp_path, capsys):
    tool = _tool()
    head = _head()
    torch.save(_official(head), tmp_path / "last.pt")
    assert tool.main([str(tmp_path / "last.pt"), str(tmp_path / "head.pth")]) == 0
    assert "obj_proj.weight" in capsys.readouterr().out
    state = torch.load(tmp_path / "head.pth", weights_only=True)
    assert sorted(state) == sorted(head.state_dict())
    assert torch.equal(state["obj_proj.weight"], head.obj_proj.weight)
    (tmp_path / "junk.pt").write_text("nope")
    from ovdense.utils.cli import run_cli

    assert run_cli(tool.main, [str(tmp_path / "junk.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
