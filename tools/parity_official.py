"""Parity of ovdense's presets with the official SCLIP-family code, both run through mmseg.

The official repositories are the reference: their segmentors (SCLIP, NACLIP, ClearCLIP,
ProxyCLIP, ResCLIP, SC-CLIP, CorrCLIP, Trident) are imported as they are from a checkout
given on the command line (never copied into ovdense) and run on identical random weights
next to ovdense's ``OVDenseSegmentor``, on the same synthetic images, with each repository's
own ``configs/cfg_<benchmark>.py`` settings and class-name files. Reported per method and
benchmark setting: the largest absolute difference of the final class-probability maps
(``seg_logits``, what each repository stores there) and the share of pixels whose label
(``pred_sem_seg``) agrees.

    python tools/parity_official.py --sclip DIR --naclip DIR --clearclip DIR \\
        --proxyclip DIR --dino DIR --resclip DIR --scclip DIR --corrclip DIR --trident DIR \\
        --out docs/parity_mmseg.md

Any subset of the methods runs; with ``--merge`` the rows already in ``--out``'s table for the
methods not given are kept (e.g. ``--resclip DIR --scclip DIR --merge`` adds or refreshes those
two). ``--json`` / ``--rows-from`` carry the rows of separate runs (e.g. one per ``--settings``).

A ``DIR`` is a checkout or a git directory (e.g. what the ``fetch`` tool returns: it is
exported with ``git archive HEAD`` into a temporary folder). ``--dino`` is
facebookresearch/dino (ProxyCLIP loads its ViT with ``torch.hub``; here from that checkout).
Needs the mmseg stack (README.md#mmsegmentation) and, for ProxyCLIP, ``einops`` and
``openpyxl``. ClearCLIP's segmentor module also imports BLIP (``transformers``) and GEM for other
``clip_type`` / ``model_type`` values; those branches are not compared, and placeholders that
raise if called stand in for the two modules. Runs on a 2-core CPU in about half an hour (most
of it encoding ADE20K's 150 classes x 80 templates on each side).

How the weights are made identical:

- CLIP: a small ViT-B/16-shaped model (patch 16, 224 pixels, width 128, 2 heads of 64, 4
  blocks; text width 128) with random weights rounded to fp16 (OpenAI's ``build_model`` casts to
  fp16 and back), QuickGELU, saved in OpenAI's layout. SCLIP and NACLIP read it with their
  ``clip.load(path)``; ClearCLIP and ProxyCLIP with their own ``open_clip`` copy's
  ``create_model`` (the architecture added with its ``add_model_config``; the call's model name
  and weight tag are replaced, nothing else). ovdense loads the same file with ``load_clip``.
- ResCLIP and SC-CLIP use blocks at fixed indices of ViT-B/16's 12 (ResCLIP's RCS blocks 6-9
  are hard-coded; SC-CLIP's defaults reach block 10): for them the same narrow CLIP with 12
  blocks, drawn after the others (which stay as they were). ResCLIP moves tensors to "cuda"
  itself (``.cuda()``, ``.to(torch.device('cuda'))``); on a machine without CUDA those moves are
  made no-ops in its process. Its feedback matrix is rounded to fp16 by its code; ovdense runs as
  shipped and with ``sfr_half=True`` (the same rounding).
- DINO (ProxyCLIP, CorrCLIP: ViT/8; Trident: ViT/16): a small ViT (width 128, 3 blocks, 2
  heads) built by DINO's own ``vision_transformer.py`` in place of ``torch.hub.load(...,
  'dino_vitb8' | 'dino_vitb16')``; ovdense builds the same size through timm and loads the same
  state dict.
- CorrCLIP (the repository's ``CorrCLIPv1`` folder) reads masks generated beforehand
  (``instance_mask_path``, one ``<stem>.npz`` per image): random region maps are written in that
  layout and ovdense reads the same files (``OVDenseSegmentor(region_dir=...)``). Trident builds
  SAM ViT-B with its own ``segment_anything`` copy: its ``sam_model_registry['vit_b']`` is given
  a narrow encoder (:data:`SAM_SIZE`; 12 heads and the 64 x 64 grid its code expects) and both
  sides load one random SAM file; its SAM refinement is off, as in the released configs. Its
  "SAM-size images" rows use images on which every resize is the identity, so that both SAMs see
  the same pixels (Trident re-reads the file for SAM; ovdense gives SAM its own input). Modules
  the official code imports only for branches not compared (CorrCLIP's ``transformers``,
  Trident's ``skimage``) are placeholders that fail if called, when they are not installed.

Each official segmentor is built from its config with ``device='cpu'`` and runs in its own
process (the repositories' top-level ``clip`` / ``open_clip`` packages would clash). ovdense runs
twice: with the official pipeline's ``Resize`` (mmseg resizes the 8-bit image, ovdense then
keeps that size; the official order) and with ovdense's own resize (the shipped configs).
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PARITY_NAME = "ovdense-parity-ViT-tiny-16"
CLIP_CFG = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 4, "width": 128, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}
#: the same narrow CLIP with ViT-B/16's 12 blocks, for the methods whose official code uses
#: blocks at fixed indices (ResCLIP: blocks 6-9 hard-coded; SC-CLIP: blocks 3-10 by default)
PARITY_NAME_12 = "ovdense-parity-ViT-tiny-16-12blocks"
CLIP_CFG_12 = {**CLIP_CFG, "vision_cfg": {**CLIP_CFG["vision_cfg"], "layers": 12}}
DINO_SIZE = {"embed_dim": 128, "depth": 3, "num_heads": 2}
#: SAM ViT-B's image encoder made narrow and shallow (Trident reads 12 heads on a 64 x 64 grid)
SAM_SIZE = {"embed_dim": 96, "depth": 2, "num_heads": 12, "global_attn_indexes": (1,)}

#: method -> module of the official segmentor, CLIP loader, extra model settings; ``blocks``:
#: the CLIP's depth (default 4); ``renormalised``: the stored probabilities sum to 1 over the
#: classes; ``cuda_moves``: the code moves tensors to "cuda" itself (made no-ops on a CPU);
#: ``ovdense_variants``: extra ovdense runs (row suffix -> overrides) next to the preset as shipped
METHODS: dict[str, dict[str, Any]] = {
    "sclip": {"module": "clip_segmentor", "loader": "openai"},
    "naclip": {"module": "naclip", "loader": "openai", "renormalised": True},
    # the released base config says model_type='vanilla' (q-k attention); the paper's method,
    # per the authors (mc-lan/ClearCLIP#12), is model_type='ClearCLIP'
    "clearclip": {
        "module": "clearclip_segmentor",
        "loader": "open_clip",
        "model": {"model_type": "ClearCLIP"},
        "fp16": True,
    },
    "proxyclip": {"module": "proxyclip_segmentor", "loader": "open_clip", "fp16": True},
    # ResCLIP's segmentor default attn_strategy='resclip' is NACLIP's attention (k-k, Gaussian
    # window, reduced last block: the same branch as 'naclip'); it rounds the feedback matrix to
    # fp16 before mixing it in, which ovdense does with sfr_half=True (default off)
    "resclip": {
        "module": "resclip_segmentor",
        "loader": "openai",
        "blocks": 12,
        "renormalised": True,
        "cuda_moves": True,
        "ovdense_variants": {" (ovdense sfr_half)": ["+model.strategy_kwargs.sfr_half=True"]},
    },
    "scclip": {"module": "scclip_segmentor", "loader": "openai", "blocks": 12},
    # CorrCLIP (its CorrCLIPv1 folder): the spatial branch averages blocks 5-9 of 12; the
    # released configs read masks generated beforehand (mask_generator=None,
    # instance_mask_path): here random region maps, given to ovdense with region_dir; it
    # stores its probabilities as ``seg_logit``
    "corrclip": {
        "module": "corrclip_segmentor",
        "loader": "open_clip",
        "subdir": "CorrCLIPv1",
        "blocks": 12,
        "fp16": True,
        "vfm": "dino_vitb8",
        "regions": True,
        "logits_key": "seg_logit",
        "unused_modules": {
            "transformers": ("AutoImageProcessor", "Mask2FormerForUniversalSegmentation")
        },
    },
    # Trident: DINO ViT/16 in CLIP's windows, SAM ViT-B's last attention over the spliced map
    # (a narrow SAM here: 12 heads as Trident's code expects of "vit_b", 64 x 64 grid); the
    # released configs leave the SAM refinement off (sam_refinement=False)
    "trident": {
        "module": "trident",
        "loader": "open_clip",
        "fp16": True,
        "vfm": "dino_vitb16",
        "sam": True,
        "unused_modules": {"skimage": ("measure",)},  # the SAM refinement's
        # Trident reads the image file again for SAM (original size, cv2 to whole patches,
        # SAM's own 8-bit resize to a 1024 long side); ovdense gives SAM its (resized) input.
        # Images whose every resize is the identity (short side = the config's, long side
        # 1024, whole patches) give both the same SAM input: compared in fp32
        "image_variants": {
            " (SAM-size images)": {"voc21": [(448, 1024), (1024, 448)], "ade20k": [(576, 1024)]}
        },
        # the released configs leave the SAM refinement off; so does ovdense here
        "overrides": ["model.post_refiner=None"],
    },
}
#: official config -> ovdense benchmark
SETTINGS = {"voc21": "voc21", "ade20k": "ade20k_150"}
IMAGE_SIZES = [(250, 330), (300, 270)]


# -- shared set-up ------------------------------------------------------------------------------
def make_weights(work: Path) -> dict[str, Path]:
    """The random CLIP (OpenAI layout, fp16-representable values), its open_clip config file,
    random DINO ViT/8 and ViT/16 state dicts and a random SAM (Trident)."""
    import torch

    from ovdense.modeling.clip import load_clip

    cfg_dir = work / "model_configs"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    (cfg_dir / f"{PARITY_NAME}.json").write_text(json.dumps(CLIP_CFG))
    (cfg_dir / f"{PARITY_NAME_12}.json").write_text(json.dumps(CLIP_CFG_12))
    gen = torch.Generator().manual_seed(0)

    def random_clip(cfg: dict, path: Path) -> Path:
        clip = load_clip(config={k: v for k, v in cfg.items() if k != "quick_gelu"}, seed=0)
        state = {}
        for name, p in clip.state_dict().items():
            if name == "logit_scale":
                value = p.clone()
            elif p.ndim == 1 and ("ln" in name or "norm" in name) and name.endswith("weight"):
                value = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
            elif name.endswith("positional_embedding") or name.endswith("class_embedding"):
                value = 0.5 * torch.randn(p.shape, generator=gen)
            else:
                fan_in = p.shape[-1] if p.ndim > 1 else 16
                value = torch.randn(p.shape, generator=gen) * (1.5 / fan_in**0.5)
            state[name] = value.half().float()
        torch.save(state, path)
        return path

    clip_file = random_clip(CLIP_CFG, work / "clip_tiny_openai_layout.pt")

    dino_file = work / "dino_tiny_vit8.pt"
    torch.save(_random_dino(8, gen), dino_file)
    # drawn after those, so the 4-block CLIP and DINO above stay what they were before it
    # existed; then DINO ViT/16 and SAM (Trident), for the same reason
    clip12_file = random_clip(CLIP_CFG_12, work / "clip_tiny12_openai_layout.pt")
    dino16_file = work / "dino_tiny_vit16.pt"
    torch.save(_random_dino(16, gen), dino16_file)
    sam_file = work / "sam_narrow_vit_b.pt"
    torch.save(_random_sam(gen), sam_file)
    return {
        "clip": clip_file,
        "clip12": clip12_file,
        "config_dir": cfg_dir,
        "dino": dino_file,
        "dino16": dino16_file,
        "sam": sam_file,
    }


def _random_dino(patch: int, gen: Any) -> dict[str, Any]:
    """A random DINO ViT of :data:`DINO_SIZE` with ``patch`` pixel patches (timm's layout, which
    DINO's own ``vision_transformer.py`` shares), values fp16-representable."""
    import timm
    import torch

    name = {8: "vit_base_patch8_224.dino", 16: "vit_base_patch16_224.dino"}[patch]
    dino = timm.create_model(name, pretrained=False, **DINO_SIZE)
    state = {}
    for key, p in dino.state_dict().items():
        if p.ndim == 1 and "norm" in key and key.endswith("weight"):
            value = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
        else:
            fan_in = p.shape[-1] if p.ndim > 1 else 16
            value = torch.randn(p.shape, generator=gen) * (1.0 / fan_in**0.5)
        state[key] = value.half().float()
    return state


def _random_sam(gen: Any) -> dict[str, Any]:
    """A random segment-anything ``Sam`` ("vit_b" with :data:`SAM_SIZE`'s encoder): every
    weight drawn (the relative position tables start at zero in SAM), fp16-representable."""
    import torch

    from ovdense.sam.model import build_sam

    sam = build_sam("vit_b", pretrained=False, **SAM_SIZE)
    state = {}
    for key, p in sam.state_dict().items():
        if not p.is_floating_point() or key.endswith(("pixel_mean", "pixel_std")):
            state[key] = p.clone()
        elif p.ndim == 1 and "norm" in key and key.endswith("weight"):
            state[key] = (1.0 + 0.1 * torch.randn(p.shape, generator=gen)).half().float()
        else:
            fan_in = p.shape[-1] if p.ndim > 1 else 16
            value = torch.randn(p.shape, generator=gen) * (1.0 / fan_in**0.5)
            state[key] = value.half().float()
    return state


def _clip_for(method: str) -> tuple[str, str]:
    """The weight key and open_clip architecture name of ``method``'s CLIP."""
    if METHODS[method].get("blocks") == 12:
        return "clip12", PARITY_NAME_12
    return "clip", PARITY_NAME


def make_images(
    work: Path, sizes: Sequence[tuple[int, int]] = tuple(IMAGE_SIZES), name: str = "img"
) -> list[Path]:
    """Smooth random RGB images (bilinearly upsampled noise) of these sizes, PNG."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    gen = torch.Generator().manual_seed(2)
    paths = []
    for i, (h, w) in enumerate(sizes):
        low = torch.rand((1, 3, h // 24, w // 24), generator=gen)
        img = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[0]
        img = (img + 0.15 * torch.rand((3, h, w), generator=gen)).clamp(0, 1)
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        path = work / "images" / f"{name}{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def make_regions(work: Path, images: list[Path]) -> Path:
    """Random region maps of the images, as CorrCLIP's pre-generated masks: one
    ``<stem>.npz`` per image with an int64 ``instance_mask`` at the image's size (cells of a
    random Voronoi partition numbered 1..K, a few left 0: no mask)."""
    import torch
    from PIL import Image

    gen = torch.Generator().manual_seed(3)
    folder = work / "region_masks"
    folder.mkdir(parents=True, exist_ok=True)
    for path in images:
        w, h = Image.open(path).size
        seeds = torch.rand((12, 2), generator=gen) * torch.tensor([h, w])
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        pixels = torch.stack([ys, xs], -1).reshape(-1, 1, 2).float()
        cell = ((pixels - seeds) ** 2).sum(-1).argmin(1).reshape(h, w)
        ids = torch.randperm(12, generator=gen) + 1
        ids[:3] = 0  # three cells without a mask
        np.savez(folder / f"{path.stem}.npz", instance_mask=ids[cell].numpy().astype(np.int64))
    return folder


def _pipeline(cfg: Any, resize: bool) -> list[dict]:
    steps = [dict(s) for s in cfg.test_pipeline if s["type"] != "LoadAnnotations"]
    return steps if resize else [s for s in steps if s["type"] != "Resize"]


def _run(
    model: Any, pipeline: list[dict], images: list[Path], logits_key: str = "seg_logits"
) -> list[dict[str, np.ndarray]]:
    import torch
    from mmengine.dataset import Compose, pseudo_collate

    compose = Compose(pipeline)
    out = []
    for path in images:
        data = pseudo_collate([compose(dict(img_path=str(path)))])
        with torch.no_grad():
            sample = model.test_step(data)[0]
        out.append(
            {
                "probs": sample.get(logits_key).data.float().cpu().numpy(),
                "labels": sample.pred_sem_seg.data[0].cpu().numpy(),
            }
        )
    return out


# -- the official side (one process per method) -----------------------------------------------
def worker(args: argparse.Namespace) -> None:
    repo = Path(args.repo)
    os.chdir(repo)  # the repository is on PYTHONPATH (set by the parent, see _official)
    import importlib

    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    import mmseg.models  # noqa: F401

    init_default_scope("mmseg")
    spec = METHODS[args.method]
    weights = json.loads(args.weights)
    if spec["loader"] == "open_clip":
        import open_clip  # the repository's own copy (its folder comes first on sys.path)

        assert Path(open_clip.__file__).resolve().is_relative_to(repo.resolve())
        open_clip.add_model_config(weights["config_dir"])
    if spec.get("vfm") or args.method == "proxyclip":  # facebookresearch/dino on PYTHONPATH
        from functools import partial

        import vision_transformer as dino_vits  # facebookresearch/dino

        def hub_load(repo_or_dir: str, model: str, *a: Any, **kw: Any) -> Any:
            # torch.hub.load('facebookresearch/dino:main', 'dino_vitb8' | 'dino_vitb16')
            patch = {"dino_vitb8": 8, "dino_vitb16": 16}[model]
            vit = dino_vits.VisionTransformer(
                patch_size=patch,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                **DINO_SIZE,
            )
            path = weights["dino" if patch == 8 else "dino16"]
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing, unexpected = vit.load_state_dict(state, strict=False)
            assert not missing and not [k for k in unexpected if not k.startswith("head")]
            return vit

        torch.hub.load = hub_load
    if spec.get("sam"):
        # Trident builds SAM with sam_model_registry['vit_b'] of its own segment_anything copy:
        # the same builder with SAM_SIZE's encoder
        from functools import partial

        import segment_anything

        build_sam = importlib.import_module("segment_anything.build_sam")
        assert Path(segment_anything.__file__).resolve().is_relative_to(repo.resolve())
        build_sam.sam_model_registry["vit_b"] = partial(
            build_sam._build_sam,
            encoder_embed_dim=SAM_SIZE["embed_dim"],
            encoder_depth=SAM_SIZE["depth"],
            encoder_num_heads=SAM_SIZE["num_heads"],
            encoder_global_attn_indexes=list(SAM_SIZE["global_attn_indexes"]),
        )
    if spec.get("cuda_moves") and not torch.cuda.is_available():
        # ResCLIP moves its feedback maps with .cuda() and its feedback PAMR with
        # .to(torch.device('cuda')) whatever the model's device; on a CPU those moves are made
        # no-ops in this process (nothing else changes)
        torch.Tensor.cuda = lambda self, *a, **kw: self  # type: ignore[method-assign]
        module_to = torch.nn.Module.to

        def to_cpu(self: Any, *a: Any, **kw: Any) -> Any:
            a = tuple("cpu" if "cuda" in str(x) else x for x in a)
            if "cuda" in str(kw.get("device", "")):
                kw["device"] = "cpu"
            return module_to(self, *a, **kw)

        torch.nn.Module.to = to_cpu  # type: ignore[method-assign]
    if args.fp32:
        # ClearCLIP and ProxyCLIP cast their models and inputs to fp16 (a GPU setting); for an
        # fp32 reference those casts are made no-ops in this process (nothing else changes)
        torch.Tensor.half = lambda self, *a, **kw: self  # type: ignore[method-assign]
        torch.nn.Module.half = lambda self: self  # type: ignore[method-assign]
    if args.method == "clearclip":
        # ClearCLIP's segmentor imports BLIP (transformers) and GEM for other clip_type /
        # model_type values; this comparison never takes those branches: placeholders that
        # fail if called stand in for the two modules
        import types

        def unused(*a: Any, **kw: Any) -> Any:
            raise RuntimeError("BLIP / GEM are not part of this comparison")

        blip = types.ModuleType("BLIP.models.blip_retrieval")
        blip.blip_retrieval = unused  # type: ignore[attr-defined]
        gem = types.ModuleType("gem")
        gem.create_gem_model = unused  # type: ignore[attr-defined]
        for name in ("BLIP", "BLIP.models"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["BLIP.models.blip_retrieval"] = blip
        sys.modules["gem"] = gem
    _placeholders(spec.get("unused_modules", {}))
    module = importlib.import_module(spec["module"])
    if spec["loader"] == "open_clip":
        original = module.create_model
        precision = "fp16" if spec.get("fp16") and not args.fp32 else "fp32"

        clip_key, clip_name = _clip_for(args.method)

        def create_model(name: str, pretrained: str | None = None, **kw: Any) -> Any:
            # the same factory and precision, our architecture and weight file
            kw["precision"] = precision
            return original(clip_name, pretrained=weights[clip_key], **kw)

        module.create_model = create_model
    cfg = Config.fromfile(str(repo / "configs" / f"cfg_{args.setting}.py"))
    model_cfg = dict(cfg.model)
    model_cfg.update(spec.get("model", {}))
    model_cfg["device"] = "cpu"
    if spec["loader"] == "openai":
        model_cfg["clip_path"] = weights[_clip_for(args.method)[0]]
    if spec.get("regions"):  # CorrCLIP's masks generated beforehand
        model_cfg["instance_mask_path"] = weights["regions"]
    if spec.get("sam"):
        model_cfg["sam_ckpt"] = weights["sam"]
    from mmseg.registry import MODELS

    model = MODELS.build(model_cfg).eval()
    key = spec.get("logits_key", "seg_logits")
    results = _run(model, _pipeline(cfg, resize=True), [Path(p) for p in args.images], key)
    np.savez(
        args.output,
        **{f"{k}{i}": r[k] for i, r in enumerate(results) for k in ("probs", "labels")},
        settings=json.dumps({k: v for k, v in model_cfg.items() if k not in ("device",)}),
    )


def _placeholders(modules: dict[str, tuple[str, ...]]) -> None:
    """Modules the official code imports for branches this comparison never takes, made of
    placeholders that fail if called (only when the real module is not installed)."""
    import importlib.util
    import types

    def unused(*a: Any, **kw: Any) -> Any:
        raise RuntimeError("not part of this comparison")

    for name, attrs in modules.items():
        if importlib.util.find_spec(name.split(".")[0]) is not None:
            continue
        module = types.ModuleType(name)
        for attr in attrs:
            setattr(module, attr, unused)
        sys.modules[name] = module


def run_official(
    method: str,
    repo: Path,
    setting: str,
    weights: dict,
    images: list[Path],
    out: Path,
    fp32: bool = False,
) -> tuple[list[dict[str, np.ndarray]], dict]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        method,
        "--repo",
        str(repo),
        "--setting",
        setting,
        "--weights",
        json.dumps({k: str(v) for k, v in weights.items()}),
        "--output",
        str(out),
        "--dino",
        str(weights.get("dino_repo", "")),
        *(["--fp32"] if fp32 else []),
        "--images",
        *map(str, images),
    ]
    # the official repository (and DINO's) first on the path, before the installed packages
    paths = [str(repo), *([str(weights["dino_repo"])] if weights.get("dino_repo") else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"official {method} ({setting}) failed:\n{proc.stderr[-4000:]}")
    data = np.load(out)
    n = len(images)
    results = [{"probs": data[f"probs{i}"], "labels": data[f"labels{i}"]} for i in range(n)]
    return results, json.loads(str(data["settings"]))


def compare_method(
    method: str,
    src: str,
    repo: Path,
    setting: str,
    weights: dict,
    images: list[Path],
    work: Path,
    fp32: bool,
    image_suffix: str = "",
) -> list[dict[str, Any]]:
    """The official segmentor and ovdense's (each of its ``ovdense_variants``) on ``images``:
    one table row per ovdense variant."""
    from ovdense.utils.official_code import revision

    t0 = time.time()
    out = work / f"{method}_{setting}{'_fp32' if fp32 else ''}_{images[0].stem}.npz"
    official, off_settings = run_official(method, repo, setting, weights, images, out, fp32)
    rows = []
    for suffix, extra in {"": [], **METHODS[method].get("ovdense_variants", {})}.items():
        label = method + (" (official in fp32)" if fp32 else "") + image_suffix + suffix
        row: dict[str, Any] = {"method": label, "setting": setting, "revision": revision(src)}
        model = build_ovdense(method, repo, setting, weights, work, extra)
        for mode, resize in (("mmseg_resize", True), ("ovdense_resize", False)):
            ours = run_ovdense(model, repo, setting, images, resize)
            row[mode] = compare(method, official, ours)
        row["settings"] = _settings_text(method, off_settings, model)
        if image_suffix:
            row["settings"] += f"; images {[_image_size(p) for p in images]}"
        row["seconds"] = round(time.time() - t0, 1)
        t0 = time.time()
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image file."""
    from PIL import Image

    w, h = Image.open(path).size
    return h, w


# -- the ovdense side -------------------------------------------------------------------------
def build_ovdense(
    method: str, repo: Path, setting: str, weights: dict, work: Path, extra: Sequence[str] = ()
) -> Any:
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import ovdense.integrations.mmseg  # noqa: F401

    init_default_scope("mmseg")
    spec = METHODS[method]
    overrides = [f"model.text_cache_dir={str(work / 'text_cache')!r}"]
    vfm = spec.get("vfm", "dino_vitb8" if method == "proxyclip" else None)
    if vfm is not None:
        # the preset's VFM settings kept (feature, ...); weights and size replaced
        key = "model.strategy_kwargs.vfm_kwargs"
        dino = weights["dino" if vfm == "dino_vitb8" else "dino16"]
        overrides.append(f"{key}.checkpoint={str(dino)!r}")
        overrides += [f"+{key}.{k}={v}" for k, v in {"pretrained": False, **DINO_SIZE}.items()]
    if spec.get("sam"):
        overrides.append(f"model.aggregator_kwargs.checkpoint={str(weights['sam'])!r}")
        overrides.append(f"+model.aggregator_kwargs.sam_kwargs={dict(SAM_SIZE)!r}")
    clip_key, clip_name = _clip_for(method)
    return MODELS.build(
        dict(
            type="OVDenseSegmentor",
            preset=method,
            benchmark=SETTINGS[setting],
            classnames=str(repo / "configs" / f"cls_{setting}.txt"),
            clip=dict(model_name=clip_name, checkpoint=str(weights[clip_key]), quick_gelu=True),
            overrides=[*overrides, *spec.get("overrides", []), *extra],
            region_dir=str(weights["regions"]) if spec.get("regions") else None,
        )
    ).eval()


def run_ovdense(model: Any, repo: Path, setting: str, images: list[Path],
                resize: bool) -> list[dict[str, np.ndarray]]:  # fmt: skip
    from mmengine.config import Config

    cfg = Config.fromfile(str(repo / "configs" / f"cfg_{setting}.py"))
    return _run(model, _pipeline(cfg, resize=resize), images)


def compare(method: str, official: list[dict], ours: list[dict]) -> dict[str, float]:
    diffs, agree, argmax_agree, total, suppressed, zero = [], 0, 0, 0, 0, 0
    classes: set[int] = set()
    for o, v in zip(official, ours):
        po, pv = o["probs"].astype(np.float64), v["probs"].astype(np.float64)
        if METHODS[method].get("renormalised"):  # NACLIP, ResCLIP: renormalised to sum 1
            pv = pv / pv.sum(0, keepdims=True)
        # SCLIP's area rule zeroes suppressed classes in its stored maps: leave those out
        keep = po.reshape(po.shape[0], -1).max(1) > 0
        suppressed += int((~keep).sum())
        diffs.append(float(np.abs(po[keep] - pv[keep]).max()))
        agree += int((o["labels"] == v["labels"]).sum())
        # the argmax of the stored maps, before the thresholds (classes SCLIP's area rule
        # dropped left out on both sides)
        argmax_agree += int((po[keep].argmax(0) == pv[keep].argmax(0)).sum())
        total += o["labels"].size
        zero += int((o["labels"] == 0).sum())
        classes.update(int(c) for c in np.unique(o["labels"]))
    return {
        "max_abs_diff": max(diffs),
        "agreement": 100.0 * agree / total,
        "argmax_agreement": 100.0 * argmax_agree / total,
        "suppressed": suppressed,
        # how much the labels say: distinct classes the official code predicted, and its share
        # of class 0 (the background the thresholds assign on VOC21)
        "official_classes": len(classes),
        "official_class0": 100.0 * zero / total,
    }


def _settings_text(method: str, official: dict, model: Any) -> str:
    seg = model.seg
    keys = (
        "logit_scale",
        "prob_thd",
        "area_thd",
        "slide_crop",
        "slide_stride",
        "pamr_steps",
        "temp_thd",  # ResCLIP
        "attn_rcs_weights",
        "attn_sfr_weights",
        "pre_adjust_idx",  # SC-CLIP
        "post_adjust_idx",
        "multi_start_idx",
        "multi_end_idx",
        "res_cls",
        "beta",  # Trident
        "gamma",
        "cos_fac",
        "refine_neg_cos",
        "sam_refinement",
    )
    off = ", ".join(f"{k}={official[k]}" for k in keys if k in official)
    ours = (
        f"logit_scale={seg.logit_scale:g}, prob_thd={seg.prob_thd:g}, area_thd={seg.area_thd}, "
        f"window={seg.window}, stride={seg.stride}, short_side={seg.short_side}, "
        f"pamr={'on' if seg.pamr is not None else 'off'}, rule={model.class_rule}"
    )
    strategy = getattr(seg.backbone, "strategy", None)
    attrs = ("temp_thd", "rcs_weights", "sfr_weights", "sfr_half")  # ResCLIP's
    attrs += ("pre_adjust_idx", "post_adjust_idx", "multi_start_idx", "multi_end_idx", "res_cls")
    if method in ("corrclip", "trident"):  # their strategies' and aggregator's settings
        attrs += ("tau", "alpha", "beta", "gamma", "merge_eps")
    extra = [f"{k}={getattr(strategy, k)}" for k in attrs if hasattr(strategy, k)]
    aggregator = getattr(seg, "aggregator", None)
    extra += [f"{k}={getattr(aggregator, k)}" for k in ("cos_fac", "refine_neg_cos", "columns")
              if hasattr(aggregator, k)]  # fmt: skip
    if method == "trident":
        extra.append(f"sam_refinement={seg.post_refiner is not None}")
    ours += "".join(f", {e}" for e in extra)
    return f"official: {off or 'defaults'}; ovdense: {ours}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for m in METHODS:
        p.add_argument(f"--{m}", metavar="DIR", help=f"the official {m} repository")
    p.add_argument(
        "--dino", metavar="DIR", help="facebookresearch/dino (ProxyCLIP, CorrCLIP, Trident)"
    )
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out", default="docs/parity_mmseg.md", help="markdown table")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--keep", default=None, help="work folder to keep (default: temporary)")
    p.add_argument(
        "--rows-from",
        nargs="*",
        default=[],
        metavar="JSON",
        help="rows of earlier runs (their --json) to put in the table too, before this run's",
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows already in --out's table for the methods not run now (this run's "
        "methods replace theirs); rows are ordered as the methods above",
    )
    # worker mode (internal)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--repo", default=None, help=argparse.SUPPRESS)
    p.add_argument("--setting", default=None, help=argparse.SUPPRESS)
    p.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    p.add_argument("--output", default=None, help=argparse.SUPPRESS)
    p.add_argument("--images", nargs="*", default=[], help=argparse.SUPPRESS)
    p.add_argument("--fp32", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.method = args.worker
        worker(args)
        return 0

    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    chosen = [m for m in METHODS if getattr(args, m)]
    if not chosen and not args.rows_from:
        p.error("give at least one official repository (--sclip DIR, ...)")
    needs_dino = [m for m in chosen if m == "proxyclip" or METHODS[m].get("vfm")]
    if needs_dino and not args.dino:
        p.error(f"--{needs_dino[0]} needs --dino DIR (facebookresearch/dino)")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ovdense_parity_"))
    work.mkdir(parents=True, exist_ok=True)
    import open_clip

    weights: dict[str, Any] = make_weights(work)
    open_clip.add_model_config(weights["config_dir"])
    images = make_images(work)
    weights["regions"] = make_regions(work, images)
    from ovdense.utils.official_code import export_tree

    dino_repo = export_tree(args.dino, work / "src" / "dino") if args.dino else None
    weights["dino_repo"] = dino_repo or ""
    rows = [row for f in args.rows_from for row in json.loads(Path(f).read_text())]
    for method in chosen:
        src = getattr(args, method)
        repo = export_tree(src, work / "src" / method) / METHODS[method].get("subdir", "")
        # ClearCLIP and ProxyCLIP run in fp16 as released, and in fp32 (.half() made a no-op)
        variants = [False, True] if METHODS[method].get("fp16") else [False]
        for setting, fp32 in [(s, v) for s in args.settings for v in variants]:
            image_sets = [("", images)]
            if fp32 or not METHODS[method].get("fp16"):
                for tag, (suffix, sizes) in enumerate(
                    METHODS[method].get("image_variants", {}).items()
                ):
                    name = f"v{tag}_{setting}_"
                    image_sets.append((suffix, make_images(work, sizes[setting], name)))
            for image_suffix, image_set in image_sets:
                rows += compare_method(
                    method, src, repo, setting, weights, image_set, work, fp32, image_suffix
                )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.merge:
        ran = {_base(r["method"]) for r in rows}
        kept = [r for r in read_rows(Path(args.out)) if _base(r["method"]) not in ran]
        order = list(METHODS)
        rows = sorted(kept + rows, key=lambda r: order.index(_base(r["method"])))
    write_table(Path(args.out), render(rows))
    print(f"wrote {args.out}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


BEGIN, END = "<!-- parity:begin -->", "<!-- parity:end -->"


def write_table(path: Path, table: str) -> None:
    """Replace what lies between the markers of ``path`` (the text around them is kept), or
    write the table alone to a new file."""
    block = f"{BEGIN}\n{table}{END}\n"
    text = path.read_text() if path.is_file() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text + block
    path.write_text(text)


def _base(label: str) -> str:
    """The method of a row label (``"clearclip (official in fp32)"`` -> ``"clearclip"``)."""
    return label.split(" ", 1)[0]


def read_rows(path: Path) -> list[dict]:
    """The rows of the table between the markers of ``path`` as written by :func:`render`
    (``method``, ``setting`` and the two markdown lines kept verbatim), for ``--merge``."""
    text = path.read_text() if path.is_file() else ""
    if BEGIN not in text or END not in text:
        return []
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    rows: list[dict] = []
    settings: dict[tuple[str, str], str] = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) > 2 and cells[1].startswith("`cfg_"):
            setting = cells[1].removeprefix("`cfg_").removesuffix(".py`")
            rows.append({"method": cells[0], "setting": setting, "table_line": line})
        elif line.startswith("- ") and " / " in line and ": " in line:
            label, rest = line[2:].split(": ", 1)
            method, setting = label.rsplit(" / ", 1)
            settings[(method, setting)] = rest
    for r in rows:
        r["settings"] = settings.get((r["method"], r["setting"]), "?")
    return rows


def render(rows: list[dict]) -> str:
    import mmseg
    import torch

    lines = [
        "| method | official config | revision | classes predicted (class 0 share) | max abs diff "
        "(mmseg resize) | labels agree (mmseg resize) | argmax agree (mmseg resize) | max abs "
        "diff (ovdense resize) | labels agree (ovdense resize) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "table_line" in r:  # kept from the table of an earlier run (--merge)
            lines.append(r["table_line"])
            continue
        a, b = r["mmseg_resize"], r["ovdense_resize"]
        lines.append(
            f"| {r['method']} | `cfg_{r['setting']}.py` | {r['revision']} | "
            f"{a['official_classes']} ({a['official_class0']:.1f} %) | "
            f"{a['max_abs_diff']:.2e} | {a['agreement']:.3f} % | {a['argmax_agreement']:.3f} % | "
            f"{b['max_abs_diff']:.2e} | {b['agreement']:.3f} % |"
        )
    settings = [f"- {r['method']} / {r['setting']}: {r['settings']}" for r in rows]
    return "\n".join(
        [
            "<!-- generated by tools/parity_official.py: edit around the markers, not inside -->",
            f"Produced with torch {torch.__version__}, mmseg {mmseg.__version__}, "
            f"{len(IMAGE_SIZES)} synthetic images {IMAGE_SIZES}, CPU.",
            "",
            *lines,
            "",
            "Settings each side resolved:",
            "",
            *settings,
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
