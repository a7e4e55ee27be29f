"""CLIP-DINOiser training: FOUND, the two losses, the Trainer run, resume, export, configs."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from ovdense import get_config
from ovdense.config import L, LazyConfig, instantiate
from ovdense.data.images import ImageFolderDataset, collate_images
from ovdense.engine import Trainer
from ovdense.evaluation.runner import resolve_eval_config
from ovdense.modeling.backbones import DenseCLIPBackbone
from ovdense.modeling.backbones.vfm import DINOFeatures, build_vfm
from ovdense.modeling.clip import load_clip
from ovdense.modeling.distill import CLIPDINOiserDistill
from ovdense.modeling.refiners import FOUNDSaliency, found_saliency
from ovdense.modeling.segmentors import CLIPDINOiserSegmentor

ROOT = Path(__file__).resolve().parents[2]
TINY_DINO = {"img_size": 32, "embed_dim": 24, "depth": 2, "num_heads": 2}


def _tiny_dino_model(seed=0, name="vit_base_patch8_224.dino"):
    model = timm.create_model(name, pretrained=False, **TINY_DINO)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def _tiny_teacher_cfg():
    """A lazy tiny random DINO ViT (patch 8, width 24, 2 blocks, 2 heads)."""
    return L(build_vfm)(name="dino_vitb8", pretrained=False, feature="value", **TINY_DINO)


def write_images(folder, n=8, size=(40, 32), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        low = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
        Image.fromarray(low).resize(size, Image.BILINEAR).save(folder / f"img{i}.png")


def _layer_norm(x, ln):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _bce(x, y):
    """BCE with logits written out: -y log σ(x) - (1 - y) log(1 - σ(x))."""
    x, y = x.double(), y.double()
    sig = 1.0 / (1.0 + torch.exp(-x))
    return -(y * torch.log(sig) + (1 - y) * torch.log(1 - sig))


# -- the DINO last block ------------------------------------------------------------------------
def test_last_block_cls_attention_and_projections():
    model = _tiny_dino_model(seed=1)
    vfm = DINOFeatures(model)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    seen = {}
    hook = model.blocks[-1].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    mean = torch.tensor(vfm.mean).view(1, 3, 1, 1)
    std = torch.tensor(vfm.std).view(1, 3, 1, 1)
    model.forward_features((images - mean) / std)
    hook.remove()
    blk = model.blocks[-1]
    y = _layer_norm(seen["x"], blk.norm1)
    c = y.shape[-1]
    qkv = y @ blk.attn.qkv.weight.T + blk.attn.qkv.bias
    q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
    out = vfm.last_block(images)
    assert out.grid == (4, 4) and out.cls_attn.shape == (2, 2, 16)
    torch.testing.assert_close(out.key, k[:, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.value, v[:, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.to_map("key"), vfm(images), atol=1e-5, rtol=1e-5)
    d = c // 2
    for b in range(2):
        for h in range(2):
            qh, kh = q[b, :, h * d : (h + 1) * d], k[b, :, h * d : (h + 1) * d]
            logits = torch.tensor(
                [float((qh[0] @ kh[j]).detach()) / math.sqrt(d) for j in range(17)]
            )
            want = torch.softmax(logits, dim=0)[1:]
            torch.testing.assert_close(out.cls_attn[b, h], want, atol=1e-5, rtol=1e-4)


# -- FOUND --------------------------------------------------------------------------------------
def test_found_toy_two_clusters():
    """A 4x4 grid: an object (2x2 block in the middle) among background patches; the least
    attended patch is background, so the object is what stays salient."""
    g = torch.Generator().manual_seed(0)
    obj = torch.zeros(4, 4, dtype=torch.bool)
    obj[1:3, 1:3] = True
    obj = obj.flatten()
    bg_dir, obj_dir = torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0, 1.0])
    feats = torch.where(obj[:, None], obj_dir, bg_dir) + 0.05 * torch.randn(16, 4, generator=g)
    attn = torch.where(obj, 0.2, 0.02) + 0.001 * torch.rand(16, generator=g)
    attn[5] = 0.25  # object patches attended, background not; patch 0 the least
    attn[0] = 0.001
    cls_attn = torch.stack([attn, attn * 0.9])[None]  # [1, 2 heads, 16]
    for weighting in (True, False):
        sal = found_saliency(cls_attn, feats[None], (4, 4), head_weighting=weighting)
        assert sal.shape == (1, 1, 4, 4)
        assert torch.equal(sal.flatten().bool(), obj)
    # an object seed (wrong attention) flips the answer: the seed decides what is background
    flipped = torch.where(obj, 0.001, 0.2)[None, None].expand(1, 2, 16)
    sal = found_saliency(flipped, feats[None], (4, 4))
    assert torch.equal(sal.flatten().bool(), ~obj)


def _found_brute_force(cls_attn, feats, tau, weighting, num_seeds, eps=1e-10):
    b, h, n = cls_attn.shape
    d = feats.shape[-1] // h
    out = torch.zeros(b, n)
    for i in range(b):
        a = cls_attn[i].double()
        thr = float(a.mean())
        q = [sum(1 for j in range(n) if float(a[hh, j]) > thr) / n for hh in range(h)]
        total = sum(qq + eps for qq in q)
        beta = [math.log(total / (qq + eps)) if weighting else 1.0 for qq in q]
        desc = feats[i].double().clone()
        score = [0.0] * n
        for hh in range(h):
            desc[:, hh * d : (hh + 1) * d] *= beta[hh]
            for j in range(n):
                score[j] += beta[hh] * float(a[hh, j])
        seeds = sorted(range(n), key=lambda j: score[j])[:num_seeds]
        for j in range(n):
            sims = [
                float(desc[j] @ desc[s]) / (float(desc[j].norm()) * float(desc[s].norm()))
                for s in seeds
            ]
            out[i, j] = 0.0 if sum(sims) / len(sims) > tau else 1.0
    return out


@pytest.mark.parametrize(
    "weighting,num_seeds,tau", [(True, 1, 0.3), (False, 1, 0.1), (True, 3, 0.0)]
)
def test_found_matches_brute_force(weighting, num_seeds, tau):
    g = torch.Generator().manual_seed(4)
    cls_attn = torch.softmax(3 * torch.randn(3, 4, 30, generator=g), dim=-1)
    feats = torch.randn(3, 30, 8, generator=g)
    got = found_saliency(cls_attn, feats, (5, 6), tau, weighting, num_seeds)
    want = _found_brute_force(cls_attn, feats, tau, weighting, num_seeds)
    assert torch.equal(got.reshape(3, 30), want)
    assert 0 < want.sum() < want.numel()  # not a trivial case


def test_found_module_and_errors(tmp_path):
    vfm = DINOFeatures(_tiny_dino_model(seed=3))
    images = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(5))
    out = vfm.last_block(images)
    sal = FOUNDSaliency(vfm)(images)
    assert torch.equal(sal, found_saliency(out.cls_attn, out.key, out.grid))
    # a FOUND decoder file: sigmoid of the 1x1 conv on the keys
    conv = torch.nn.Conv2d(24, 1, 1)
    torch.save({"decoder": conv.state_dict()}, tmp_path / "decoder.pt")
    soft = FOUNDSaliency(vfm, decoder_checkpoint=tmp_path / "decoder.pt")(images)
    torch.testing.assert_close(soft, torch.sigmoid(conv(out.to_map("key"))))
    with pytest.raises(ValueError, match="not a FOUND decoder"):
        torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pt")
        FOUNDSaliency(vfm, decoder_checkpoint=tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="divisible"):
        found_saliency(out.cls_attn, out.key[..., :5], out.grid)


# -- the losses ---------------------------------------------------------------------------------
def _distill(tiny_clip_factory, seed=0, teacher_name="vit_base_patch8_224.dino", **kw):
    clip = tiny_clip_factory(seed=seed)
    teacher = DINOFeatures(_tiny_dino_model(seed=seed + 10, name=teacher_name), feature="value")
    model = CLIPDINOiserDistill(clip, teacher, proj_dim=8, **kw)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.head.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return model, clip, teacher


def _block0_ln2(clip, images):
    """The ln_2 output of CLIP block 0 (= block −3 of the 3-block tiny ViT), CLS dropped."""
    seen = []
    ln = clip.visual.transformer.resblocks[0].ln_2
    hook = ln.register_forward_hook(lambda m, i, o: seen.append(o))
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        clip.visual((images - mean) / std)
    hook.remove()
    x = seen[0]
    g = int(math.isqrt(x.shape[1] - 1))
    return x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, g, g)


def test_losses_equal_hand_computation(tiny_clip_factory):
    model, clip, teacher = _distill(tiny_clip_factory, seed=1)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    valid = torch.tensor([[32, 32], [20, 32]])  # (h, w): image 1 has content in rows 0..19
    losses = model({"image": images, "valid_size": valid})
    assert set(losses) == {"loss_corr", "loss_bkg"}

    feats = _block0_ln2(clip, images)  # [2, 64, 4, 4]
    head = model.head
    with torch.no_grad():
        z = F.normalize(head.obj_proj(feats), dim=1).flatten(2)
        student = (z.transpose(1, 2) @ z).clamp(min=0)  # [2, 16, 16]
        vals = F.normalize(teacher(images), dim=1).flatten(2)  # DINO values, same 4x4 grid
        target = ((vals.transpose(1, 2) @ vals) >= 0.2).float()
        out = teacher.last_block(images)
        sal = found_saliency(out.cls_attn, out.key, out.grid).flatten(1)  # [2, 16]
        bkg = head.bkg_decoder(F.normalize(feats, dim=1)).flatten(1)
    # cells whose centre (4 + 8 i) is inside the content: image 1 keeps rows 0..1 (centres 4, 12)
    cell_ok = torch.ones(2, 16, dtype=torch.bool)
    cell_ok[1, 8:] = False
    num = den = 0.0
    for b in range(2):
        for i in range(16):
            for j in range(16):
                if cell_ok[b, i] and cell_ok[b, j]:
                    num += float(_bce(student[b, i, j], target[b, i, j]))
                    den += 1
    torch.testing.assert_close(losses["loss_corr"].double(), torch.tensor(num / den).double())
    num = den = 0.0
    for b in range(2):
        for i in range(16):
            if cell_ok[b, i]:
                num += float(_bce(bkg[b, i], (sal[b, i] > 0.5).float()))
                den += 1
    torch.testing.assert_close(losses["loss_bkg"].double(), torch.tensor(num / den).double())
    assert 0 < target.mean() < 1 and 0 < sal.mean() < 1  # both classes occur in the targets
    # without valid_size every cell counts
    full = model({"image": images})
    want = F.binary_cross_entropy_with_logits(student, target)
    torch.testing.assert_close(full["loss_corr"], want)


def test_teacher_targets_resized_to_the_clip_grid(tiny_clip_factory):
    """A patch-16 DINO (2x2 grid) for the patch-8 CLIP (4x4): values and saliency are resized
    bilinearly to 4x4 before the cosine / the threshold."""
    model, _, teacher = _distill(
        tiny_clip_factory, seed=2, teacher_name="vit_base_patch16_224.dino"
    )
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    corr, sal = model.teacher_targets(images, (4, 4))
    out = teacher.last_block(images)
    assert out.grid == (2, 2)
    up = F.interpolate(out.to_map("value"), size=(4, 4), mode="bilinear", align_corners=False)
    z = F.normalize(up, dim=1).flatten(2)
    torch.testing.assert_close(corr, z.transpose(1, 2) @ z)
    s = found_saliency(out.cls_attn, out.key, out.grid)
    torch.testing.assert_close(
        sal, F.interpolate(s, size=(4, 4), mode="bilinear", align_corners=False)
    )
    assert corr.shape == (1, 16, 16) and sal.shape == (1, 1, 4, 4)


def test_only_the_head_is_trainable_and_saved(tiny_clip_factory):
    model, _, _ = _distill(tiny_clip_factory, seed=3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"head.{k}" for k in model.head.state_dict()}
    assert set(model.state_dict()) == trainable
    groups = model.param_groups()
    assert [g["lr"] for g in groups] == [5e-5, 1e-2]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.head.obj_proj.parameters()}
    model.train()
    assert model.head.training and not model.backbone.training and not model.teacher.training
    with pytest.raises(RuntimeError, match="only its head"):
        model.load_state_dict({"backbone.x": torch.zeros(1), **model.state_dict()})


# -- training with the Trainer ------------------------------------------------------------------
def make_cfg(tmp_path, tiny_clip_config, max_iter=20, out="out"):
    return DictConfig(
        {
            "model": L(CLIPDINOiserDistill)(
                clip=L(load_clip)(config=tiny_clip_config, seed=0),
                teacher=_tiny_teacher_cfg(),
                proj_dim=8,
                corr_lr=3e-2,
                bkg_lr=1e-1,
            ),
            "dataloader": {
                "dataset": L(ImageFolderDataset)(root=str(tmp_path / "images"), image_size=32),
                "batch_size": 2,
            },
            "optimizer": L(torch.optim.AdamW)(lr=1e-3),
            "train": {
                "max_iter": max_iter,
                "output_dir": str(tmp_path / out),
                "log_period": 5,
                "checkpoint_period": 0,
            },
        },
        flags={"allow_objects": True},
    )


def test_trainer_lowers_loss_and_changes_only_the_heads(tmp_path, tiny_clip_config):
    write_images(tmp_path / "images")
    trainer = Trainer(make_cfg(tmp_path, tiny_clip_config))
    model: CLIPDINOiserDistill = trainer.model
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [3e-2, 1e-1]
    batch = collate_images([trainer.loader.dataset[i] for i in range(8)])
    frozen = {
        n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("head.")
    }
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    with torch.no_grad():
        before = model(batch)
    trainer.train()
    with torch.no_grad():
        after = model(batch)
    assert float(sum(after.values())) < 0.9 * float(sum(before.values()))
    assert float(after["loss_bkg"]) < float(before["loss_bkg"])
    for n, p in model.named_parameters():
        if not n.startswith("head."):
            assert torch.equal(p, frozen[n]) and p.grad is None, n
    assert all(not torch.equal(v, head_before[k]) for k, v in model.head.state_dict().items())
    ckpt = torch.load(tmp_path / "out" / "model_0000020.pt", weights_only=True)
    assert set(ckpt["model"]) == {f"head.{k}" for k in head_before}


def test_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_clip_config):
    write_images(tmp_path / "images", n=6)

    def cfg(out, max_iter):
        c = make_cfg(tmp_path, tiny_clip_config, max_iter=max_iter, out=out)
        c.train.checkpoint_period = 3
        return c

    full = Trainer(cfg("full", 6))
    full.train()
    Trainer(cfg("part", 3)).train()
    torch.manual_seed(99)
    resumed = Trainer(cfg("part", 6), resume=True)
    assert resumed.iter == 3
    resumed.train()
    for (name, a), b in zip(
        full.model.head.named_parameters(), resumed.model.head.parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    # and differs from a run that stopped at 3 (the comparison is not vacuous)
    part = torch.load(tmp_path / "part" / "model_0000003.pt", weights_only=True)["model"]
    assert not torch.equal(part["head.obj_proj.weight"], full.model.head.obj_proj.weight)


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_trained_heads_load_into_the_segmentor(tmp_path, tiny_clip_config):
    write_images(tmp_path / "images", n=4)
    cfg = make_cfg(tmp_path, tiny_clip_config, max_iter=4)
    trainer = Trainer(cfg)
    trainer.train()
    trained = trainer.model.head
    last = trainer.model.save_official_checkpoint(tmp_path / "last.pt", epoch=2)
    raw = torch.load(last, weights_only=True)
    assert raw["epoch"] == 2 and sorted(raw["model_state_dict"]) == sorted(
        ["obj_proj.weight", "obj_proj.bias", "bkg_decoder.weight", "bkg_decoder.bias"]
    )
    # the export tool writes the same file from the run folder
    assert _tool("export_clip_dinoiser").main([str(tmp_path / "out"), str(tmp_path / "x.pt")]) == 0
    exported = torch.load(tmp_path / "x.pt", weights_only=True)["model_state_dict"]
    for k, v in raw["model_state_dict"].items():
        assert torch.equal(exported[k], v)

    preset = get_config("seg/clip_dinoiser_vitb16")
    preset.model.clip = L(load_clip)(config=tiny_clip_config, seed=0)
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    for ckpt in (last, tmp_path / "out" / "model_0000004.pt"):  # release format or trainer's
        preset.model.head_checkpoint = str(ckpt)
        seg: CLIPDINOiserSegmentor = instantiate(preset.model)
        head = seg.dinoiser_head
        assert head.proj_dim == 8
        for k, v in trained.state_dict().items():
            assert torch.equal(head.state_dict()[k], v), k
        # the segmentor's features use the trained head: direct computation
        base = DenseCLIPBackbone(seg.backbone.visual, strategy="maskclip", pos_interp="size")
        x = base.normalize(images)
        seen: list[torch.Tensor] = []
        hook = base.visual.transformer.resblocks[0].ln_2.register_forward_hook(
            lambda m, i, o, seen=seen: seen.append(o)
        )
        with torch.no_grad():
            tokens, grid, _ = base.forward_tokens(x)
            proj = base.project(tokens)[:, 1:].transpose(1, 2).reshape(1, -1, *grid)
        hook.remove()
        feats = seen[0][:, 1:].transpose(1, 2).reshape(1, -1, *grid)
        with torch.no_grad():
            want = F.normalize(trained.pool(proj, trained.correlations(feats)), dim=1)
            want_bkg = torch.sigmoid(trained.bkg_decoder(F.normalize(feats, dim=1)))
            got, aux = seg.forward_features(x)
        torch.testing.assert_close(got.dense, want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(aux["background"], want_bkg)


# -- configs ------------------------------------------------------------------------------------
def test_train_config_loads_and_builds_with_tiny_models(tiny_clip_config):
    cfg = LazyConfig.load(str(ROOT / "ovdense/configs/train/clip_dinoiser_vitb16.py"))
    m = cfg.model
    assert (m.clip.model_name, m.clip.pretrained) == ("ViT-B-16", "laion2b_s34b_b88k")
    assert (m.teacher.name, m.teacher.feature) == ("dino_vitb16", "value")
    assert (m.corr_lr, m.bkg_lr, m.gamma, m.feature_block, m.proj_dim) == (
        5e-5,
        1e-2,
        0.2,
        -3,
        256,
    )
    assert cfg.dataloader.batch_size == 16 and cfg.dataloader.dataset.image_size == 448
    assert list(cfg.lr_scheduler.steps) == [5000] and cfg.lr_scheduler.gamma == 0.1
    assert cfg.train.max_iter == 6000 and "AdamW" in str(cfg.optimizer._target_)
    m.clip = L(load_clip)(config=tiny_clip_config, seed=0)
    m.teacher = _tiny_teacher_cfg()
    m.proj_dim = 8
    model = instantiate(m)
    assert isinstance(model, CLIPDINOiserDistill) and model.head.obj_proj.out_channels == 8
    losses = model({"image": torch.rand(2, 3, 32, 32)})
    assert all(torch.isfinite(v) for v in losses.values())


def test_eval_preset_background_decision():
    for name in ("voc21", "coco_object"):
        cfg = resolve_eval_config("clip_dinoiser", name)
        assert cfg.model.background_rule == "force" and cfg.class_rule == "unified"
        assert (cfg.model.short_side, cfg.model.window, cfg.model.stride) == (448, 448, 224)
        assert cfg.model.logit_scale == 100.0 and cfg.model.delta == 0.99
    assert resolve_eval_config("clip_dinoiser", "context60").model.background_rule is False
    assert resolve_eval_config("clip_dinoiser", "ade20k_150").model.background_rule is None


def test_forced_background_rule_ignores_class_names(tiny_clip):
    from ovdense.modeling.refiners import CLIPDINOiserHead

    torch.manual_seed(0)
    head = CLIPDINOiserHead(64, delta=1.0)
    with torch.no_grad():
        head.bkg_decoder.bias.fill_(-100.0)  # nothing salient
    kw = dict(templates="single", short_side=40, window=32, stride=16)
    seg = CLIPDINOiserSegmentor(tiny_clip, head=head, background_rule="force", **kw)
    feats = seg.encode_image(torch.rand(1, 3, 40, 56))
    out = seg.decode(feats, seg.encode_text([["sky", "wall"], "cat", "dog"]))
    assert (out.labels == 0).all()
    seg.background_rule = None  # class 0 is not named "background": rule off
    auto = seg.decode(feats, seg.encode_text([["sky", "wall"], "cat", "dog"]))
    assert (auto.labels != 0).any()
    with pytest.raises(ValueError, match="background_rule"):
        CLIPDINOiserSegmentor(tiny_clip, head=head, background_rule="yes", **kw)
