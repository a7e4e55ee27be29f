"""CLIPSelf dense self-distillation, its image-folder data and the open_clip export."""

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image
from tiny_strategies import tiny_strategy_kwargs

from ovdense.config import L, LazyConfig
from ovdense.data.images import (
    ImageFolderDataset,
    MultiScaleCollate,
    collate_images,
)
from ovdense.engine import Trainer
from ovdense.modeling.backbones import DenseCLIPBackbone, list_strategies
from ovdense.modeling.clip import load_clip
from ovdense.modeling.distill import CLIPSelf
from ovdense.utils.cli import run_cli


def write_images(folder, n=8, size=(40, 32), seed=0):
    """Smooth random RGB images (w x h) as PNGs; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        low = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
        im = Image.fromarray(low).resize(size, Image.BILINEAR)
        path = folder / f"img{i}.png"
        im.save(path)
        paths.append(path)
    return paths


def test_pooling_and_loss_match_hand_computation(tiny_clip_factory):
    model = CLIPSelf(tiny_clip_factory(seed=1), crop_size=32)
    d = model.student.embed_dim
    dense = F.normalize(torch.randn(1, d, 4, 4), dim=1)
    # a box covering exactly patch (row 1, col 2) of 8-pixel patches: the patch feature
    rois = torch.tensor([[0.0, 16.0, 8.0, 24.0, 16.0], [0.0, 0.0, 0.0, 32.0, 32.0]])
    pooled = model.pool_regions(dense, rois, stride=8.0)
    torch.testing.assert_close(pooled[0], dense[0, :, 1, 2], atol=1e-6, rtol=0)
    # the whole map: the normalised mean of all patches
    torch.testing.assert_close(
        pooled[1], F.normalize(dense[0].mean(dim=(1, 2)), dim=0), atol=1e-6, rtol=0
    )
    teacher = torch.randn(2, d)
    expected = 1.0 - (pooled * F.normalize(teacher, dim=-1)).sum(-1)
    loss = model.distill_loss(pooled, teacher)
    torch.testing.assert_close(loss, expected.mean(), atol=1e-6, rtol=0)
    assert float(model.distill_loss(pooled, 3.0 * pooled)) == pytest.approx(0.0, abs=1e-6)


def test_forward_matches_hand_computation_on_one_region(tiny_clip_factory):
    # grid 1x1 and crop_size = image size: the teacher sees the image itself, the student's
    # region is the mean of its whole dense map.
    model = CLIPSelf(tiny_clip_factory(seed=2), grid=(1, 1), crop_size=32).eval()
    images = torch.rand(2, 3, 32, 32)
    loss = model({"image": images})["loss_clipself"]
    teacher = DenseCLIPBackbone(model.teacher.visual)
    with torch.no_grad():
        t = teacher(teacher.normalize(images)).global_embed
        dense = model.student(model.student.normalize(images)).dense
    s = F.normalize(dense.mean(dim=(2, 3)), dim=-1)
    expected = (1.0 - (s * t).sum(-1)).mean()
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=0)
    assert float(loss.detach()) > 1e-4  # student and teacher differ on dense vs global features


def test_grid_boxes_cover_the_image_content(tiny_clip_factory):
    model = CLIPSelf(tiny_clip_factory(seed=3), grid=(2, 3), crop_size=32)
    boxes = model.grid_boxes(torch.tensor([20, 30]))
    assert boxes.shape == (6, 4)
    torch.testing.assert_close(boxes[0], torch.tensor([0.0, 0.0, 10.0, 10.0]))
    torch.testing.assert_close(boxes[-1], torch.tensor([20.0, 10.0, 30.0, 20.0]))
    choices = CLIPSelf(tiny_clip_factory(seed=3), grid=[(1, 1), (2, 2)], crop_size=32)
    torch.manual_seed(0)
    counts = {len(choices.grid_boxes(torch.tensor([32, 32]))) for _ in range(20)}
    assert counts == {1, 4}
    with pytest.raises(ValueError, match="grid"):
        CLIPSelf(tiny_clip_factory(seed=3), grid=(0, 2))


def make_cfg(tmp_path, tiny_clip_config, max_iter=30):
    return DictConfig(
        {
            "model": L(CLIPSelf)(
                clip=L(load_clip)(config=tiny_clip_config, seed=0), grid=[2, 2], crop_size=32
            ),
            "dataloader": {
                "dataset": L(ImageFolderDataset)(root=str(tmp_path / "images"), image_size=64),
                "batch_size": 2,
                "collate_fn": L(MultiScaleCollate)(sizes=[48, 64]),
            },
            "optimizer": L(torch.optim.AdamW)(lr=1e-3, weight_decay=0.0),
            "train": {
                "max_iter": max_iter,
                "output_dir": str(tmp_path / "out"),
                "log_period": 10,
                "checkpoint_period": 0,
            },
        },
        flags={"allow_objects": True},
    )


def test_trainer_lowers_loss_and_teacher_is_frozen(tmp_path, tiny_clip_config):
    write_images(tmp_path / "images")
    trainer = Trainer(make_cfg(tmp_path, tiny_clip_config))
    model: CLIPSelf = trainer.model
    batch = collate_images([trainer.loader.dataset[i] for i in range(8)])
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.student.state_dict().items()}
    with torch.no_grad():
        before = float(model(batch)["loss_clipself"])
    assert all(not p.requires_grad for p in model.teacher.parameters())
    trainer.train()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert not model.teacher.training
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    assert any(not torch.equal(v, student_before[k]) for k, v in model.student.state_dict().items())
    with torch.no_grad():
        after = float(model(batch)["loss_clipself"])
    assert after < 0.7 * before
    lines = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines] == [10, 20, 30]
    assert lines[-1]["loss_clipself"] < lines[0]["loss_clipself"]


def test_trainable_blocks_freezes_earlier_blocks(tiny_clip_factory):
    model = CLIPSelf(tiny_clip_factory(seed=4), trainable_blocks=1, crop_size=32)
    visual = model.clip.visual
    before = {k: v.clone() for k, v in visual.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        model({"image": torch.rand(2, 3, 32, 32)})["loss_clipself"].backward()
        opt.step()
        opt.zero_grad()
    after = visual.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed, "the last block must train"
    assert all(k.startswith(("transformer.resblocks.2.", "ln_post.", "proj")) for k in changed)
    assert any(k.startswith("transformer.resblocks.2.") for k in changed)
    with pytest.raises(ValueError, match="trainable_blocks"):
        CLIPSelf(tiny_clip_factory(seed=4), trainable_blocks=4)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_saved_checkpoint_reloads_for_every_strategy(
    tmp_path, tiny_clip_factory, tiny_clip_config, suffix
):
    name = "ovdense-test-clipself-tiny"
    (tmp_path / f"{name}.json").write_text(json.dumps(tiny_clip_config))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    model = CLIPSelf(tiny_clip_factory(seed=5), crop_size=32)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model({"image": torch.rand(2, 3, 32, 32)})["loss_clipself"].backward()
    opt.step()
    path = model.save_open_clip_checkpoint(tmp_path / f"student{suffix}")
    assert path.is_file() and not list(tmp_path.glob(".student*"))
    reloaded = load_clip(name, checkpoint=path)
    state = reloaded.state_dict()
    assert not any(k.startswith("teacher") for k in state)
    for k, v in model.clip.state_dict().items():
        assert torch.equal(state[k], v), k
    images = torch.rand(1, 3, 40, 48)
    for strategy in [s for s in list_strategies() if s != "proxy"]:
        kwargs = tiny_strategy_kwargs(strategy)
        ref = DenseCLIPBackbone(model.clip, strategy, kwargs).eval()
        new = DenseCLIPBackbone(reloaded, strategy, kwargs).eval()
        with torch.no_grad():
            a, b = ref(ref.normalize(images)), new(new.normalize(images))
        assert torch.equal(a.dense, b.dense), strategy
        assert torch.equal(a.global_embed, b.global_embed), strategy
    direct = open_clip.create_model(name, pretrained=str(path))
    assert torch.equal(direct.visual.proj, model.clip.visual.proj)


def test_proposals_are_clipped_and_empty_boxes_rejected(tmp_path, tiny_clip_factory):
    write_images(tmp_path / "images", n=2, size=(40, 20))
    proposals = {
        "images": [{"id": 1, "file_name": "img0.png"}, {"id": 2, "file_name": "img1.png"}],
        "annotations": [
            {"image_id": 1, "bbox": [30, 10, 20, 20]},  # partly outside (image is 40 x 20)
            {"image_id": 2, "bbox": [2, 2, 10, 10]},
        ],
    }
    path = tmp_path / "proposals.json"
    path.write_text(json.dumps(proposals))
    model = CLIPSelf(tiny_clip_factory(seed=6), proposals=path, crop_size=32)
    dataset = ImageFolderDataset(tmp_path / "images", image_size=32)
    batch = collate_images([dataset[0], dataset[1]])
    rois = model.regions(batch)
    # scale 32 / 40 = 0.8; content 16 x 32: [30, 10, 50, 30] * 0.8 clipped -> [24, 8, 32, 16]
    torch.testing.assert_close(rois[0], torch.tensor([0.0, 24.0, 8.0, 32.0, 16.0]))
    torch.testing.assert_close(rois[1], torch.tensor([1.0, 1.6, 1.6, 9.6, 9.6]))
    assert torch.isfinite(model(batch)["loss_clipself"])

    proposals["annotations"].append({"image_id": 2, "bbox": [50, 0, 10, 10]})
    path.write_text(json.dumps(proposals))
    bad = CLIPSelf(tiny_clip_factory(seed=6), proposals=path, crop_size=32)
    with pytest.raises(ValueError, match=r"img1\.png.*empty after clipping"):
        bad(batch)
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match="COCO-format"):
        CLIPSelf(tiny_clip_factory(seed=6), proposals=path)


def test_dataset_resizes_pads_and_collates(tmp_path):
    write_images(tmp_path / "images", n=3, size=(40, 20))
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not an image")
    dataset = ImageFolderDataset(tmp_path / "images", image_size=[16, 32])
    assert len(dataset) == 4 and dataset.image_size == 32
    sample = dataset[1]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert sample["valid_size"].tolist() == [16, 32] and sample["scale"] == pytest.approx(0.8)
    assert sample["orig_size"].tolist() == [20, 40]
    assert float(sample["image"][:, 16:].abs().max()) == 0.0  # zero padding
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    broken = [i for i, p in enumerate(dataset.paths) if p.name == "broken.jpg"][0]
    with pytest.raises(ValueError, match="broken.jpg"):
        dataset[broken]
    good = [dataset[i] for i in range(4) if i != broken]
    half = collate_images(good, size=16)
    assert half["image"].shape == (3, 3, 16, 16)
    assert half["valid_size"].tolist() == [[8, 16]] * 3
    torch.testing.assert_close(half["scale"], torch.full((3,), 0.4))
    collate = MultiScaleCollate([16, 32])
    sizes = {collate(good[:2])["image"].shape[-1] for _ in range(3)}
    assert len(sizes) == 1  # the same batch always gets the same size
    picks = {collate.pick([i, i + 1]) for i in range(20)}
    assert picks == {16, 32}


def test_empty_image_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images.*empty"):
        ImageFolderDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolderDataset(tmp_path / "missing")


def test_clipself_config_loads():
    cfg = LazyConfig.load("ovdense/configs/train/clipself_vitb16.py")
    assert cfg.optimizer.lr == 1e-5 and cfg.optimizer.weight_decay == 0.1
    assert cfg.train.max_iter == cfg.lr_scheduler.max_iter == 6 * (118_287 // 16)
    assert cfg.lr_scheduler.warmup_iters == 1000
    assert list(cfg.dataloader.collate_fn.sizes) == [320, 640, 896, 1024]
    assert cfg.dataloader.batch_size == 2 and cfg.model.crop_size == 224


def test_resume_is_exact_with_random_grids(tmp_path, tiny_clip_config):
    write_images(tmp_path / "images")

    def cfg(out, max_iter):
        c = make_cfg(tmp_path, tiny_clip_config, max_iter=max_iter)
        c.model.grid = [[1, 1], [2, 2], [1, 2]]
        c.train.output_dir = str(tmp_path / out)
        c.train.checkpoint_period = 3
        return c

    full = Trainer(cfg("full", 6))
    full.train()
    Trainer(cfg("part", 3)).train()
    torch.manual_seed(123)  # disturb the global RNG: resume restores it
    resumed = Trainer(cfg("part", 6), resume=True)
    assert resumed.iter == 3
    resumed.train()
    for a, b in zip(full.model.student.parameters(), resumed.model.student.parameters()):
        assert torch.equal(a, b)


def test_export_tool_writes_the_trained_student(tmp_path, tiny_clip_config):
    import importlib.util

    write_images(tmp_path / "images")
    cfg = make_cfg(tmp_path, tiny_clip_config, max_iter=4)
    cfg.train.checkpoint_period = 4
    trainer = Trainer(cfg)
    trainer.train()
    spec = importlib.util.spec_from_file_location(
        "export_clipself", Path(__file__).resolve().parents[2] / "tools" / "export_clipself.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "exported.pt"
    rc = tool.main(
        [
            "--config",
            str(tmp_path / "out" / "config.yaml"),
            "--checkpoint",
            str(tmp_path / "out"),
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    ref = tmp_path / "reference.pt"
    trainer.model.save_open_clip_checkpoint(ref)
    a = torch.load(out, weights_only=True)
    b = torch.load(ref, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (
        run_cli(
            tool.main,
            [
                "--config",
                str(tmp_path / "out" / "config.yaml"),
                "--checkpoint",
                str(tmp_path / "nothing"),
                "--output",
                str(out),
            ],
        )
        == 2
    )
