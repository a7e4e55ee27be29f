"""Training CAT-Seg's head: CLIP's partial fine-tuning, the loss, the trainer (loss goes down,
exact resume, checkpoints hold only what trains) and the trained head in a segmentor by
config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from ovdense.config import L, LazyConfig, instantiate
from ovdense.data.synthetic import ShapesSegDataset, train_class_names
from ovdense.engine import Trainer, WarmupCosine, load_checkpoint
from ovdense.modeling.clip import load_clip
from ovdense.modeling.segmentors import (
    CATSegModel,
    Segmentor,
    build_catseg_segmentor,
    finetune_clip,
)

TINY_HEAD = {
    "hidden_dim": 32,
    "window_size": 2,
    "pad_len": 32,
    "guidance_dim": 16,
    "decoder_dims": (32, 16),
    "decoder_guidance_dims": (16, 16),
    "decoder_guidance_proj_dims": (8, 8),
}


def tiny_model(tiny_clip_factory, finetune="qv", **kw) -> CATSegModel:
    clip = tiny_clip_factory(seed=3)
    return CATSegModel(
        clip,
        ["red circle", "blue square", "green star"],
        head_kwargs=TINY_HEAD,
        templates="shapes",
        finetune=finetune,
        image_size=32,
        **kw,
    )


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (2, 32, 32), generator=g)
    labels[:, :3] = 255
    return {"image": torch.rand(2, 3, 32, 32, generator=g), "label": labels}


def test_qv_finetuning_trains_only_query_and_value_projections(tiny_clip_factory):
    model = tiny_model(tiny_clip_factory).train()
    clip = model.clip
    model(batch())["loss_sem_seg"].backward()
    trainable = set(model.trainable_clip)
    # every attention block of both towers, nothing else
    attn = {n for n, _ in clip.named_parameters() if n.endswith("attn.in_proj_weight")}
    assert trainable == attn and any(n.startswith("visual.") for n in attn)
    assert any(not n.startswith("visual.") for n in attn)
    for name, p in clip.named_parameters():
        if name not in trainable:
            assert not p.requires_grad and p.grad is None, name
            continue
        c = p.shape[0] // 3
        assert torch.count_nonzero(p.grad[c : 2 * c]) == 0, f"{name}: key rows got gradients"
    # the value rows of every block and the query rows of all but the image tower's last
    # block (CAT-Seg's dense last block uses its values only) receive gradients
    for name in trainable:
        g = dict(clip.named_parameters())[name].grad
        c = g.shape[0] // 3
        assert g[2 * c :].abs().sum() > 0, name
        if name != "visual.transformer.resblocks.2.attn.in_proj_weight":
            assert g[:c].abs().sum() > 0, name
    assert all(p.grad is not None for p in model.head.parameters())


def test_frozen_clip_and_modes(tiny_clip_factory):
    model = tiny_model(tiny_clip_factory, finetune="none").train()
    model(batch())["loss_sem_seg"].backward()
    assert all(p.grad is None for p in model.clip.parameters())
    assert len(model.param_groups()) == 1
    with pytest.raises(ValueError, match="finetune"):
        finetune_clip(model.clip, "qkv")


def test_loss_is_bce_against_one_hot_labels(tiny_clip_factory):
    model = tiny_model(tiny_clip_factory)
    logits = torch.randn(2, 3, 8, 8)
    labels = torch.randint(0, 3, (2, 32, 32))
    labels[0, 0, 0] = 255
    got = model.losses(logits, labels)["loss_sem_seg"]
    up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    target = torch.zeros_like(up)
    for b in range(2):
        for y in range(32):
            for x in range(32):
                if labels[b, y, x] != 255:
                    target[b, labels[b, y, x], y, x] = 1
    want = F.binary_cross_entropy_with_logits(up, target)
    torch.testing.assert_close(got, want)
    labels[1, 1, 1] = 7
    with pytest.raises(ValueError, match="outside"):
        model.losses(logits, labels)


def test_state_dict_holds_what_trains_and_round_trips(tiny_clip_factory):
    model = tiny_model(tiny_clip_factory)
    sd = model.state_dict()
    assert {k for k in sd if not k.startswith("head.")} == {
        f"clip.{n}" for n in model.trainable_clip
    }
    other = tiny_model(tiny_clip_factory)
    with torch.no_grad():
        for p in other.head.parameters():
            p.add_(1.0)
        for n, p in other.clip.named_parameters():
            if n in other.trainable_clip:
                p.add_(1.0)
    other.load_state_dict(sd)
    for k, v in other.state_dict().items():
        assert torch.equal(v, sd[k]), k
    with pytest.raises(ValueError, match="unexpected"):
        other.load_state_dict({**sd, "backbone.x": torch.zeros(1)})


# --------------------------------------------------------------------------------------------
# with the trainer, on the shapes world
# --------------------------------------------------------------------------------------------
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def train_cfg(out: Path, **train) -> DictConfig:
    return DictConfig(
        {
            "model": L(CATSegModel)(
                clip=L(load_clip)(config=TINY_CLIP, seed=0),
                class_names=L(train_class_names)(),
                head_kwargs=TINY_HEAD,
                templates="shapes",
                clip_lr=1e-4,
                image_size=32,
            ),
            "dataloader": {
                "dataset": L(ShapesSegDataset)(length=8, seed=5, size=32),
                "batch_size": 2,
                "shuffle": True,
            },
            "optimizer": L(torch.optim.AdamW)(lr=2e-3, weight_decay=1e-4),
            "lr_scheduler": L(WarmupCosine)(max_iter=20, warmup_iters=0),
            "train": {"max_iter": 20, "output_dir": str(out), "log_period": 5, **train},
        },
        flags={"allow_objects": True},
    )


def test_training_lowers_the_loss_and_checkpoints_hold_what_trains(tmp_path):
    trainer = Trainer(train_cfg(tmp_path, checkpoint_period=0))
    trainer.train()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["loss_sem_seg"] < 0.7 * lines[0]["loss_sem_seg"]
    ckpt = load_checkpoint(tmp_path / "model_0000020.pt")
    keys = set(ckpt["model"])
    assert all(k.startswith("head.") or k.endswith("attn.in_proj_weight") for k in keys)
    assert not any(k.startswith(("clip.token_embedding", "clip.visual.conv1")) for k in keys)


def test_resume_is_exact(tmp_path):
    # 8 scenes in batches of 2: the interruption at 5 is inside the second epoch
    full = Trainer(train_cfg(tmp_path / "full", max_iter=7, checkpoint_period=5))
    full.train()
    part = Trainer(train_cfg(tmp_path / "part", max_iter=5, checkpoint_period=5))
    part.train()
    torch.manual_seed(99)
    resumed = Trainer(train_cfg(tmp_path / "part", max_iter=7, checkpoint_period=5), resume=True)
    assert resumed.iter == 5
    resumed.train()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_trained_head_loads_into_the_segmentor_by_config(tmp_path):
    trainer = Trainer(train_cfg(tmp_path / "run", max_iter=2, checkpoint_period=0))
    trainer.train()
    ckpt = tmp_path / "run" / "model_0000002.pt"
    preset = tmp_path / "catseg_tiny.py"
    preset.write_text(
        "from ovdense.config import LazyCall as L\n"
        "from ovdense.modeling.clip import load_clip\n"
        "from ovdense.modeling.segmentors import build_catseg_segmentor\n"
        f"model = L(build_catseg_segmentor)(clip=L(load_clip)(config={TINY_CLIP!r}, seed=0),\n"
        f"    checkpoint={str(ckpt)!r}, head_kwargs={TINY_HEAD!r}, templates='shapes',\n"
        "    short_side=32, window=32, stride=32)\n"
    )
    seg = instantiate(LazyConfig.load(preset).model)
    assert isinstance(seg, Segmentor) and type(seg) is Segmentor
    trained = trainer.model.eval()
    vocab = ["red circle", "blue square", "purple circle"]
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = seg(img, vocab)
        want = trained.segmentor(short_side=32, window=32, stride=32)(img, vocab)
    torch.testing.assert_close(out.probs, want.probs, atol=1e-5, rtol=1e-5)
    # the text of the fine-tuned tower, not the pretrained one's cached embeddings
    fresh = build_catseg_segmentor(
        load_clip(config=TINY_CLIP, seed=0), head_kwargs=TINY_HEAD, templates="shapes"
    )
    assert seg.text_encoder.model_id() != fresh.text_encoder.model_id()
    assert not torch.allclose(
        seg.encode_text(vocab).template_embeds, fresh.encode_text(vocab).template_embeds
    )
    with pytest.raises(ValueError, match="Head tensors"):
        build_catseg_segmentor(
            load_clip(config={**TINY_CLIP, "embed_dim": 16}, seed=0),
            checkpoint=ckpt,
            head_kwargs=TINY_HEAD,
            templates="shapes",
        )
    wider = {**TINY_CLIP, "vision_cfg": {**TINY_CLIP["vision_cfg"], "width": 48}}
    with pytest.raises(ValueError, match="CLIP tensors"):
        build_catseg_segmentor(
            load_clip(config=wider, seed=0),
            checkpoint=ckpt,
            head_kwargs=TINY_HEAD,
            templates="shapes",
        )


# --------------------------------------------------------------------------------------------
# the shipped configs (real CLIPs replaced by the tiny one: no download)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, size", [("vitb16", 384), ("vitl14", 336)])
def test_training_configs_follow_the_paper(arch, size):
    from ovdense.engine.trainer import load_train_config

    root = Path(__file__).resolve().parents[2] / "ovdense" / "configs" / "train"
    cfg = load_train_config(root / f"catseg_{arch}.py")
    assert cfg.model.clip.model_name == {"vitb16": "ViT-B-16", "vitl14": "ViT-L-14-336"}[arch]
    assert cfg.model.clip.pretrained == "openai" and cfg.model.image_size == size
    assert cfg.model.templates == "catseg" and cfg.model.finetune == "qv"
    assert cfg.model.clip_lr == pytest.approx(0.01 * cfg.optimizer.lr)
    assert cfg.optimizer.lr == 2e-4 and cfg.optimizer.weight_decay == 1e-4
    assert cfg.train.max_iter == cfg.lr_scheduler.max_iter == 80_000
    assert cfg.lr_scheduler.warmup_iters == 0 and cfg.train.clip_grad == 0.01
    assert cfg.dataloader.batch_size == 4 and cfg.dataloader.dataset.crop_size == 384
    assert cfg.dataloader.dataset.dataset.name == "coco_stuff171_train"
    head = cfg.model.head_kwargs
    assert (head.num_layers, head.hidden_dim, head.window_size, head.pad_len) == (2, 128, 12, 256)
    # the model builds (tiny CLIP); the training classes are COCO-Stuff's 171
    cfg.model.clip = L(load_clip)(config=TINY_CLIP, seed=0)
    cfg.model.head_kwargs.window_size = 2
    model = instantiate(cfg.model)
    assert len(model.class_names) == 171 and model.class_names[0] == "person"
    assert model.head.intermediate_layers == (0, 1)


@pytest.mark.parametrize("arch", ["vitb16", "vitl14"])
def test_segmentor_presets(arch):
    from ovdense import get_config

    cfg = get_config(f"seg/catseg_{arch}")
    # the official evaluation for both sizes: 640 x 640, 384 windows 256 apart + the whole
    # image, ViT-L's crops entering CLIP at 336
    geometry = {"vitb16": ((640, 640), 384, 256, None), "vitl14": ((640, 640), 384, 256, 336)}
    cfg.model.clip = L(load_clip)(config=TINY_CLIP, seed=0)
    seg = instantiate(cfg.model)
    assert type(seg) is Segmentor and seg.logit_scale == 1.0
    assert (seg.fixed_size, seg.window, seg.stride, seg.crop_resize) == geometry[arch]
    assert seg.global_view and seg.decode_order == "sigmoid"
    assert seg.text_encoder.templates == ("A photo of a {} in the scene",)
    assert seg.head_layers == (0, 1) and seg.backbone.out_indices == (0, 1)
    assert seg.backbone.strategy.name == "catseg"


def test_readme_example_mounts_the_head_without_a_segmentor(tiny_clip_factory, tmp_path):
    """README "The head in another model", with the tiny CLIP: backbone, text encoder and head
    by hand give the segmentor's logits on one window."""
    from ovdense.modeling.backbones import dense_backbone_for
    from ovdense.modeling.segmentors import catseg_head_for, load_catseg_checkpoint
    from ovdense.modeling.text import TextEncoder

    trained = tiny_model(tiny_clip_factory)
    torch.save(trained.state_dict(), tmp_path / "ckpt.pt")
    clip = tiny_clip_factory(seed=3)
    head = catseg_head_for(clip, num_templates=3, class_chunk=2, **TINY_HEAD)
    load_catseg_checkpoint(tmp_path / "ckpt.pt", clip, head)
    head.eval()  # class pooling 1 at inference (2 in training)
    backbone = dense_backbone_for(clip, "catseg", out_indices=head.intermediate_layers)
    text = TextEncoder(clip, templates="shapes")(["cat", "sofa", "floor"], per_template=True)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f = backbone(backbone.normalize(images))
        inter = [f.intermediates[f"block{i}"] for i in (0, 1)]
        logits = head(f.unnormalized(), text.template_embeds, inter)
        seg = trained.eval().segmentor(short_side=None, window=None, templates="shapes")
        want = seg.window_logits(
            seg.encode_image(images), seg.encode_text(["cat", "sofa", "floor"])
        )
    assert logits.shape == (2, 3, 16, 16)
    up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, want, atol=1e-5, rtol=1e-5)


def test_evaluation_preset_has_the_zero_shot_suite_and_published_numbers():
    from ovdense.evaluation.runner import eval_preset, resolve_eval_config

    preset = eval_preset("catseg")
    assert preset.method == "catseg"
    assert list(preset.suite) == ["ade20k_847", "context459", "ade20k_150", "context59", "voc20"]
    assert preset.published == {
        "ade20k_847": 12.0,
        "context459": 19.0,
        "ade20k_150": 31.8,
        "context59": 57.5,
        "voc20": 94.6,
    }
    cfg = resolve_eval_config("catseg", "ade20k_847")
    assert cfg.model.short_side == 640 and cfg.model.window == 384 and cfg.model.stride == 256
