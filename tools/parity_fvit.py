"""Parity of ovdense's F-ViT with the official F-ViT code (CLIPSelf repository, MMDetection 2.x).

The official detector is built from its own config (``F-ViT/configs/ov_coco/...`` or
``ov_lvis/...``) by MMDetection 2.28 with the official ``F-ViT/models`` and CLIPSelf's
``open_clip`` fork (its EVA-CLIP tower), with random weights; its state dict is saved in the
official checkpoint format (mmcv's ``{"meta", "state_dict"}``), that file is loaded by
``ovdense.modeling.convert.fvit.load_fvit``, and both detect on the same synthetic image.
Reported: the largest differences of the final detections (boxes, scores, labels; F-ViT's
score ensemble, NMS and detections-per-image included), matched by rank.

    python tools/parity_fvit.py --clipself DIR --python VENV_PYTHON --out docs/parity_fvit.md
    # --size full: the config's own EVA02-CLIP-B/16 tower (slow on a CPU)

``DIR`` is a checkout of wusize/CLIPSelf or its git directory (exported with ``git archive``).
``VENV_PYTHON`` is a Python with ``mmcv==1.7.2`` (the pure-Python build) and ``mmdet==2.28.2``
(README.md#f-vit-parity); the two compiled mmcv ops F-ViT's test path needs (``nms`` and
``roi_align_forward``) are given to mmcv by torchvision's ``nms`` and ``roi_align`` (the same
algorithms; mmcv's ``RoIAlign`` default ``aligned=True`` is passed through), every other
compiled op raises if called. SyncBN becomes BN (same tensors; one process). The official
``EvaCLIPViT`` calls ``open_clip.create_model(name, pretrained="eva", ...)``; here that call
builds the fork's EVA-CLIP from its own config with random weights (``--size tiny``: 4 blocks,
width 64, patch 16, 64 px, the structure of EVA02-CLIP-B/16: RoPE, sub-LN, SwiGLU;
``xattn``/``fusedLN`` off, which need xformers / apex). The batch norms outside the tower get
the statistics of their inputs on the test image (``--bn calibrated``, the default; with
``--bn random`` OV-LVIS's batch-normed RPN ties most objectness scores, see
``docs/parity_fvit.md``). Nothing of the official code is copied.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "ovcoco_vitb16": "configs/ov_coco/fvit_vitb16_upsample_fpn_bs64_3e_ovcoco_eva_original.py",
    "ovlvis_vitb16": "configs/ov_lvis/fvit_vitb16_upsample_fpn_bs64_4x_ovlvis_eva_original.py",
}
TINY_EVA = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 64,
        "layers": 4,
        "width": 64,
        "head_width": 16,
        "patch_size": 16,
        "mlp_ratio": 2.6667,
        "eva_model_name": "eva-clip-b-16-X",
        "drop_path_rate": 0.0,
        "xattn": False,
        "fusedLN": False,
        "rope": True,
        "pt_hw_seq_len": 4,
        "intp_freq": True,
        "naiveswiglu": True,
        "subln": True,
    },
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": 64,
        "heads": 2,
        "layers": 1,
        "xattn": False,
        "fusedLN": False,
    },
}
OVD_TINY_NAME = "ovdense-parity-EVA02-tiny16"
OVD_TIMM_NAME = "ovdense_parity_eva02_tiny16"


# ----------------------------------------------------------------------------- official side
def _fake_mmcv_ext() -> types.ModuleType:
    """``mmcv._ext`` with the two ops F-ViT's test path calls, from torchvision."""
    import torchvision

    ext = types.ModuleType("mmcv._ext")

    def nms(boxes, scores, iou_threshold, offset=0):
        if offset != 0:
            raise NotImplementedError("nms with offset=1 (not used by F-ViT)")
        return torchvision.ops.nms(boxes.float(), scores.float(), float(iou_threshold))

    def roi_align_forward(input, rois, output, argmax_y, argmax_x, **kw):
        if kw["pool_mode"] not in (1, "avg"):
            raise NotImplementedError("roi_align max pooling (not used by F-ViT)")
        out = torchvision.ops.roi_align(
            input,
            rois,
            (kw["aligned_height"], kw["aligned_width"]),
            kw["spatial_scale"],
            kw["sampling_ratio"],
            kw["aligned"],
        )
        output.copy_(out)

    ext.nms = nms
    ext.roi_align_forward = roi_align_forward

    def missing(name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def op(*a: Any, **k: Any) -> Any:
            raise NotImplementedError(f"mmcv op {name} is not available in this parity run")

        return op

    ext.__getattr__ = missing  # type: ignore[attr-defined]
    return ext


def _bn_only(obj: Any) -> Any:
    if isinstance(obj, dict):
        if obj.get("type") in ("SyncBN", "MMSyncBN"):
            return {**obj, "type": "BN"}
        return {k: _bn_only(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_bn_only(v) for v in obj]
    return obj


def _official_input(img: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """F-ViT's test pipeline on a uint8 ``[H, W, 3]`` RGB image whose long side is the test
    size (the resize is the identity): ImageNet normalisation, zero padding to a square."""
    import torch

    h, w = img.shape[:2]
    side = max(h, w)
    mean = np.array([123.675, 116.28, 103.53], dtype=np.float32)
    std = np.array([58.395, 57.12, 57.375], dtype=np.float32)
    x = (img.astype(np.float32) - mean) / std
    padded = np.zeros((side, side, 3), np.float32)  # Pad(pad_to_square=True), zeros
    padded[:h, :w] = x
    tensor = torch.from_numpy(padded).permute(2, 0, 1)[None].contiguous()
    meta = dict(
        img_shape=(h, w, 3),
        ori_shape=(h, w, 3),
        pad_shape=(side, side, 3),
        scale_factor=np.ones(4, dtype=np.float32),
        flip=False,
    )
    return tensor, meta


def _calibrate_bn(model: Any, run: Any) -> None:
    """Give every batch norm outside the frozen tower statistics of what it sees on the test
    image (each one set from its input in one test pass, in order) and an affine part near the
    identity, as a trained model's are.

    With purely random statistics a batch norm whose input is tiny (std-0.05 weights upstream)
    outputs an almost constant map; the RPN's objectness then varies by ~1e-7 across anchors and
    is tied at float precision for most of them (OV-LVIS's batch-normed RPN: 152 distinct scores
    among 667 proposals), so which anchors survive the top-k and the NMS depends on the order
    of float rounding and of tie-breaking inside ``topk`` / ``sort``, not on the model."""
    import torch
    from torch import nn

    handles = []

    def set_stats(mod: nn.Module, inputs: tuple[Any, ...]) -> None:
        x = inputs[0].detach().transpose(0, 1).flatten(1).double()
        with torch.no_grad():
            mod.running_mean.copy_(x.mean(1))
            mod.running_var.copy_(x.var(1, unbiased=False) + 1e-3)
            mod.weight.copy_(1.0 + 0.1 * torch.randn_like(mod.weight))
            mod.bias.copy_(0.1 * torch.randn_like(mod.bias))

    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and not name.startswith(
            "backbone.visual."
        ):
            handles.append(mod.register_forward_pre_hook(set_stats))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()


def official(args: argparse.Namespace) -> None:
    """Runs in the venv with mmdet 2.x, cwd = the exported ``F-ViT`` folder."""
    sys.modules["mmcv._ext"] = _fake_mmcv_ext()
    import models  # noqa: F401  (F-ViT/models: registers FViT, EvaCLIPViT, FViTRoIHead ...)
    import open_clip  # CLIPSelf's fork (src/ on PYTHONPATH)
    import torch
    from mmcv import Config, ConfigDict
    from mmdet.models import build_detector

    out = Path(args.workdir)
    torch.manual_seed(args.seed)
    cfg = Config.fromfile(CONFIGS[args.config])
    model_cfg = _bn_only(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model))
    eva_cfg = dict(TINY_EVA)
    if args.size == "full":
        name = model_cfg["backbone"]["model_name"]
        eva_cfg = open_clip.eva_clip.get_model_config(name)
        eva_cfg["vision_cfg"].update(xattn=False, fusedLN=False)
        eva_cfg["text_cfg"].update(xattn=False, fusedLN=False, layers=1)
    cfg_file = out / "parity-eva.json"
    cfg_file.write_text(json.dumps(eva_cfg))
    open_clip.eva_clip.add_model_config(str(cfg_file))

    def create_model(model_name: str, pretrained: str | None = None, **kw: Any):
        return open_clip.eva_clip.create_model("parity-eva", pretrained=None, device="cpu")

    open_clip.create_model = create_model
    all_classes = json.loads(Path(model_cfg["roi_head"]["bbox_head"]["all_classes"]).read_text())
    d = eva_cfg["embed_dim"]
    if args.size == "tiny":
        width = eva_cfg["vision_cfg"]["width"]
        g = torch.Generator().manual_seed(args.seed)
        emb = {n: torch.randn(d, generator=g) for n in [*all_classes, "background"]}
        torch.save(emb, out / "embeds.pt")
        bh = model_cfg["roi_head"]["bbox_head"]
        bh.update(class_embed=str(out / "embeds.pt"), fc_out_channels=d, in_channels=32)
        bh["conv_out_channels"] = 32
        model_cfg["backbone"]["out_indices"] = [0, 1, 2, 3]
        model_cfg["neck"].update(in_channels=[width] * 4, out_channels=32)
        model_cfg["rpn_head"].update(in_channels=32, feat_channels=32)
        model_cfg["roi_head"]["bbox_roi_extractor"]["out_channels"] = 32
        if "mask_head" in model_cfg["roi_head"]:
            model_cfg["roi_head"]["mask_roi_extractor"]["out_channels"] = 32
            model_cfg["roi_head"]["mask_head"].update(in_channels=32, conv_out_channels=32)
    model = build_detector(ConfigDict(model_cfg))
    with torch.no_grad():  # random weights with some spread (every tensor, BN statistics too)
        for n, p in model.named_parameters():
            if n.endswith("detect_temperature"):
                p.fill_(50.0)
            elif n.startswith("backbone.visual.") and p.ndim == 1 and "norm" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif "all_embeddings" in n or "bg_embedding" in n:
                continue
            else:
                p.copy_(args.weight_std * torch.randn_like(p))
        for n, b in model.named_buffers():
            if n.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif n.endswith("running_mean"):
                b.normal_(0.0, 0.1)
    model.eval()
    tensor, meta = _official_input(np.load(out / "image.npy"))
    if args.bn == "calibrated":
        _calibrate_bn(model, lambda: model.simple_test(tensor, [meta], rescale=True))
    sd = {k: v for k, v in model.state_dict().items()}
    torch.save({"meta": {"CLASSES": tuple(all_classes)}, "state_dict": sd}, out / "fvit.pth")
    h, w = meta["ori_shape"][:2]
    start = time.time()
    with torch.no_grad():
        res = model.simple_test(tensor, [meta], rescale=True)[0]
    seconds = time.time() - start
    bbox = res[0] if isinstance(res, tuple) else res
    boxes, scores, labels = [], [], []
    for k, arr in enumerate(bbox):
        for row in arr:
            boxes.append(row[:4].tolist())
            scores.append(float(row[4]))
            labels.append(k)
    record = {
        "boxes": boxes,
        "scores": scores,
        "labels": labels,
        "seconds": seconds,
        "seen": json.loads(Path(model_cfg["roi_head"]["bbox_head"]["seen_classes"]).read_text()),
        "all": all_classes,
    }
    if isinstance(res, tuple):
        masks = []
        for per_class in res[1]:
            masks += [np.asarray(m, dtype=bool) for m in per_class]
        np.save(out / "masks.npy", np.stack(masks) if masks else np.zeros((0, h, w), bool))
    (out / "official.json").write_text(json.dumps(record))


# ----------------------------------------------------------------------------- ovdense side
def _register_tiny_eva() -> None:
    import open_clip
    import timm
    from timm.models import register_model
    from timm.models.eva import _create_eva

    if not timm.models.is_model(OVD_TIMM_NAME):

        def ovdense_parity_eva02_tiny16(pretrained: bool = False, **kwargs: Any):
            a = dict(
                img_size=64,
                patch_size=16,
                embed_dim=64,
                depth=4,
                num_heads=4,
                qkv_fused=False,
                mlp_ratio=4 * 2 / 3,
                swiglu_mlp=True,
                scale_mlp=True,
                scale_attn_inner=True,
                use_rot_pos_emb=True,
                ref_feat_shape=(4, 4),
                global_pool=kwargs.pop("global_pool", "token"),
            )
            return _create_eva(OVD_TIMM_NAME, pretrained=pretrained, **dict(a, **kwargs))

        ovdense_parity_eva02_tiny16.__name__ = OVD_TIMM_NAME
        register_model(ovdense_parity_eva02_tiny16)
    if OVD_TINY_NAME not in open_clip.list_models():
        cfg = {
            "embed_dim": 64,
            "vision_cfg": {
                "image_size": 64,
                "timm_model_name": OVD_TIMM_NAME,
                "timm_model_pretrained": False,
                "timm_pool": "token",
                "timm_proj": None,
            },
            "text_cfg": {
                "context_length": 77,
                "vocab_size": 49408,
                "width": 64,
                "heads": 2,
                "layers": 1,
            },
            "custom_text": True,
        }
        f = Path(tempfile.mkdtemp(prefix="ovdense_parity_eva_")) / f"{OVD_TINY_NAME}.json"
        f.write_text(json.dumps(cfg))
        open_clip.add_model_config(f)


def ovdense_side(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from ovdense.modeling.convert.fvit import load_fvit, preset_with

    off = json.loads((work / "official.json").read_text())
    if args.size == "tiny":
        _register_tiny_eva()
        preset = preset_with(
            args.config,
            clip_model=OVD_TINY_NAME,
            width=64,
            depth=4,
            out_indices=(0, 1, 2, 3),
            image_size=args.image_size,
        )
    else:
        preset = preset_with(args.config, image_size=args.image_size)
    ck = load_fvit(work / "fvit.pth", preset=preset)
    assert ck.classes == off["all"], "class order differs"
    img = np.load(work / "image.npy")
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    seen = set(off["seen"])
    start = time.time()
    pred = ck.detector.predict([x], ck.class_embeds, is_base=[c in seen for c in ck.classes])[0]
    seconds = time.time() - start
    ob = np.array(off["boxes"], dtype=np.float64).reshape(-1, 4)
    os_ = np.array(off["scores"], dtype=np.float64)
    ol = np.array(off["labels"])
    order = np.argsort(-os_, kind="stable")
    ob, os_, ol = ob[order], os_[order], ol[order]
    nb = pred["boxes"].double().numpy()
    ns = pred["scores"].double().numpy()
    nl = pred["labels"].numpy()
    n = min(len(os_), len(ns))
    # match each official detection to the ovdense one of the same class with the closest box
    used: set[int] = set()
    box_err, score_err, matched = 0.0, 0.0, 0
    for i in range(len(os_)):
        cand = [j for j in np.nonzero(nl == ol[i])[0] if j not in used]
        if not cand:
            continue
        j = min(cand, key=lambda j: np.abs(nb[j] - ob[i]).max() + abs(ns[j] - os_[i]))
        if np.abs(nb[j] - ob[i]).max() > 1e-2:
            continue
        used.add(j)
        matched += 1
        box_err = max(box_err, float(np.abs(nb[j] - ob[i]).max()))
        score_err = max(score_err, float(abs(ns[j] - os_[i])))
    rank_same = int(np.sum(ol[:n] == nl[:n]))
    out = {
        "config": args.config,
        "size": args.size,
        "bn": args.bn,
        "image": list(img.shape[:2]),
        "official_detections": int(len(os_)),
        "ovdense_detections": int(len(ns)),
        "matched": matched,
        "same_label_at_rank": rank_same,
        "max_box_diff_px": box_err,
        "max_score_diff": score_err,
        "score_range": [
            float(os_.min()) if len(os_) else 0.0,
            float(os_.max()) if len(os_) else 0.0,
        ],
        "official_seconds": round(off["seconds"], 2),
        "ovdense_seconds": round(seconds, 2),
    }
    if (work / "masks.npy").exists() and "masks" in pred:
        om = np.load(work / "masks.npy")[order]
        nm = (pred["masks"][:, 0] >= 0.5).numpy()  # mmdet's mask_thr_binary
        ious = []
        for i in range(min(len(om), len(nm))):
            if ol[i] == nl[i]:
                inter = np.logical_and(om[i], nm[i]).sum()
                union = np.logical_or(om[i], nm[i]).sum()
                ious.append(inter / union if union else 1.0)
        out["mask_pixels_differing"] = int(
            sum(np.logical_xor(om[i], nm[i]).sum() for i in range(min(len(om), len(nm))))
        )
        out["mask_pixels_total"] = int(sum(om[i].sum() for i in range(len(om))))
        out["mask_iou_mean"] = float(np.mean(ious)) if ious else None
        out["mask_iou_min"] = float(np.min(ious)) if ious else None
    return out


def _export(src: Path) -> tuple[Path, Path | None]:
    if (src / "F-ViT").is_dir():
        return src, None
    tmp = Path(tempfile.mkdtemp(prefix="clipself_"))
    archive = subprocess.run(
        ["git", f"--git-dir={src}", "archive", "HEAD", "src", "F-ViT"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    return tmp, tmp


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clipself", help="CLIPSelf checkout or git directory")
    p.add_argument("--python", help="Python with mmcv 1.7 (pure) + mmdet 2.28")
    p.add_argument("--config", default="ovcoco_vitb16", choices=sorted(CONFIGS))
    p.add_argument("--size", default="tiny", choices=("tiny", "full"))
    p.add_argument(
        "--image-size", type=int, default=None, help="long side (default 128 / config's)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weight-std", type=float, default=0.05)
    p.add_argument(
        "--bn",
        default="calibrated",
        choices=("calibrated", "random"),
        help="batch norms outside the tower: statistics of the test image (default) or random",
    )
    p.add_argument("--out", default=None, help="write the figures here (markdown table row)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        official(args)
        return 0
    if not args.clipself or not args.python:
        p.error("--clipself and --python are needed")
    if args.image_size is None:
        full = {"ovcoco_vitb16": 640, "ovlvis_vitb16": 1024}[args.config]
        args.image_size = 128 if args.size == "tiny" else full
    repo, tmp = _export(Path(args.clipself))
    work = Path(tempfile.mkdtemp(prefix="parity_fvit_"))
    try:
        rng = np.random.default_rng(args.seed)
        s = args.image_size
        h = s * 3 // 4 // 16 * 16
        img = np.kron(rng.integers(0, 256, (h // 8, s // 8, 3)), np.ones((8, 8, 1)))
        np.save(work / "image.npy", img.astype(np.uint8))  # blocky: boxes with some structure
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(repo / "src"), str(repo / "F-ViT")])
        cmd = [
            args.python,
            str(Path(__file__).resolve()),
            "--child",
            "--workdir",
            str(work),
            "--config",
            args.config,
            "--size",
            args.size,
            "--seed",
            str(args.seed),
            "--weight-std",
            str(args.weight_std),
            "--bn",
            args.bn,
        ]
        subprocess.run(cmd, check=True, cwd=repo / "F-ViT", env=env)
        result = ovdense_side(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
