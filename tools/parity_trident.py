#!/usr/bin/env python
"""Parity of ovdense's Trident (preset ``trident_vitb16``) with the official code, on identical
random weights (figures recorded in docs/parity.md#trident).

The official repository (``--trident``: a checkout or a git directory, exported with ``git
archive HEAD``; nothing is copied into ovdense) runs in a child process with the repository and
facebookresearch/dino (``--dino``, for DINO's ``vision_transformer.py``) on its PYTHONPATH. Its
``trident.Trident.get_trident_seg`` (windows, DINO-guided attention in CLIP's last block,
splicing, SAM-attention aggregation, the logits at the image size) is called as it is; what its
forward pass does not use is stubbed: mmseg / mmengine (the segmentor base class, the data
preprocessor, the registry), ``openpyxl`` (result sheets), ``skimage`` (SAM refinement only).
The segmentor is made without its ``__init__`` (which downloads weights), its attributes set as
``__init__`` sets them. ``Tensor.half`` is made a no-op so that both sides run in float32.

Identical weights: CLIP ViT-B/16 (OpenAI architecture, QuickGELU; random, LayerNorm weights
``1 + 0.1 N(0, 1)``, biases ``0.02 N(0, 1)``), SAM ViT-B (random, relative position tables and
norms randomised too; its full state dict is loaded by the official ``sam_model_registry`` and
by ovdense's aggregator) and DINO ViT-B/16 (built by DINO's own ``vit_base`` in the child,
randomised the same way, saved; ovdense reads that file through timm). Text: random unit
vectors. Images: smooth random 8-bit images whose long side is 1024 pixels and sides are
multiples of 16, written as PNG (the official code re-reads the image from disk for SAM; at
these sizes SAM's resize is the identity on both sides). The CLIP input is ovdense's short-side
resize of that image (bilinear, float), given to both sides (the official pipeline's mmseg
``Resize`` works on 8-bit images; docs/parity.md says why that is left out).

ovdense side: ``get_config("trident_vitb16")`` with the per-benchmark settings of
``eval/trident.py``, the weights above, ``post_refiner=None``, fp32; ``Segmentor.encode_image``
then ``name_logits`` (cosine logits at the image size). Compared: those logits against the
official ``get_trident_seg`` output — max abs difference and the share of pixels whose argmax
agrees.

    python tools/parity_trident.py --trident /path/Trident --dino /path/dino
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

#: The cases: an official per-benchmark setting each (configs/cfg_<benchmark>.py) and an image.
CASES = [
    {"name": "voc21", "size": (768, 1024), "short": 448, "stride": 224, "cos_fac": 1.2,
     "refine_neg_cos": True, "dataset_type": "PascalVOCDataset"},
    {"name": "ade20k", "size": (1024, 768), "short": 576, "stride": 224, "cos_fac": 1.2,
     "refine_neg_cos": False, "dataset_type": "ADE20KDataset"},
    {"name": "voc20", "size": (640, 1024), "short": 336, "stride": 112, "cos_fac": 0.0,
     "refine_neg_cos": True, "dataset_type": "PascalVOC20Dataset"},
    {"name": "cityscapes", "size": (1024, 2048), "short": 688, "stride": 224, "cos_fac": 3.0,
     "refine_neg_cos": False, "dataset_type": "CityscapesDataset"},
]  # fmt: skip
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _randomise(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Norm weights ``1 + 0.1 N``, biases and SAM's relative position tables ``0.02 N``."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "rel_pos" in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1 and ("norm" in name or "ln" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1 and name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


# -- the official side (child process) ----------------------------------------------------------
def _stub_modules() -> None:
    """Modules ``trident.py`` imports but its forward pass does not use."""

    def module(name: str, **attrs) -> None:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod

    class BaseSegmentor(torch.nn.Module):
        def __init__(self, data_preprocessor=None):
            super().__init__()

    class Registry:
        def register_module(self, *a, **k):
            return lambda cls: cls

    for name in ("mmseg", "mmseg.models", "mmengine", "skimage", "openpyxl"):
        module(name)
    module("mmseg.models.segmentors", BaseSegmentor=BaseSegmentor)
    module("mmseg.models.data_preprocessor", SegDataPreProcessor=lambda **k: None)
    module("mmseg.registry", MODELS=Registry())
    module("mmengine.structures", PixelData=dict)
    module("skimage.measure", label=None)


def run_official(spec: dict) -> None:
    _stub_modules()
    torch.Tensor.half = lambda self, *a, **k: self  # type: ignore[method-assign]
    import open_clip  # the repository's own copy (on PYTHONPATH)
    import trident
    import vision_transformer as dino_vits  # facebookresearch/dino
    from myutils import UnNormalize
    from segment_anything import SamPredictor, sam_model_registry
    from torchvision import transforms

    work = Path(spec["work"])
    torch.set_grad_enabled(False)
    gen = torch.Generator().manual_seed(spec["seed"] + 7)
    dino = dino_vits.vit_base(patch_size=16)
    _randomise(dino, gen)
    torch.save(dino.state_dict(), work / "dino.pt")
    clip = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    clip.load_state_dict(torch.load(work / "clip.pt", weights_only=True))
    sam = sam_model_registry["vit_b"](checkpoint=str(work / "sam.pt"))
    seg = trident.Trident.__new__(trident.Trident)
    torch.nn.Module.__init__(seg)
    # what Trident.__init__ sets, with these weights
    seg.clip = clip.eval()
    seg.clip_stride = 16
    seg.vfm_model, seg.vfm = "dino", dino.eval()
    seg.unnorm = UnNormalize(list(OPENAI_MEAN), list(OPENAI_STD))
    seg.norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    seg.query_features = torch.load(work / "text.pt", weights_only=True)
    seg.beta, seg.gamma, seg.slide_crop = 1.2, 3.0, 336
    seg.sam = sam.eval()
    seg.sam_predictor = SamPredictor(sam)
    seg.sam_heads, seg.sam_refine = 12, False
    for case in spec["cases"]:
        seg.slide_stride = case["stride"]
        seg.cos_fac, seg.refine_neg_cos = case["cos_fac"], case["refine_neg_cos"]
        seg.dataset_type = case["dataset_type"]
        src = torch.load(work / f"{case['name']}_input.pt", weights_only=True)
        t = time.time()
        logits = seg.get_trident_seg(
            src, str(work / f"{case['name']}.png"), [{"ori_shape": tuple(case["size"])}]
        )
        torch.save(logits, work / f"{case['name']}_official.pt")
        print(f"official {case['name']}: {tuple(logits.shape)} in {time.time() - t:.0f} s")


# -- the ovdense side (parent process) ----------------------------------------------------------
def _smooth_image(size: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    low = torch.rand(1, 3, size[0] // 64 + 2, size[1] // 64 + 2, generator=gen)
    img = F.interpolate(low, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    return img.mul(255).round().to(torch.uint8)


def _ovdense_segmentor(work: Path, case: dict):
    from ovdense.config import LazyCall as L
    from ovdense.config import instantiate
    from ovdense.model_zoo import get_config
    from ovdense.modeling.clip import load_clip

    cfg = get_config("seg/trident_vitb16")
    m = cfg.model
    m.clip = L(load_clip)(model_name="ViT-B-16-quickgelu", checkpoint=str(work / "clip.pt"))
    m.strategy_kwargs.vfm_kwargs.checkpoint = str(work / "dino.pt")
    m.aggregator_kwargs.checkpoint = str(work / "sam.pt")
    m.aggregator_kwargs.cos_fac = case["cos_fac"]
    m.aggregator_kwargs.refine_neg_cos = case["refine_neg_cos"]
    m.aggregator_kwargs.columns = 2 if case["dataset_type"] == "CityscapesDataset" else 1
    m.update(
        short_side=case["short"],
        stride=case["stride"],
        post_refiner=None,
        precision="fp32",
        templates="single",
    )
    return instantiate(m).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trident", type=Path, help="checkout or git dir of YuHengsss/Trident")
    parser.add_argument("--dino", type=Path, help="checkout or git dir of facebookresearch/dino")
    parser.add_argument("--cases", default=",".join(c["name"] for c in CASES))
    parser.add_argument("--names", type=int, default=21, help="number of random text embeddings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--work",
        type=Path,
        help="working folder (default: a new temporary one); official "
        "outputs already there (same seed) are reused",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_official(json.loads(args.child.read_text()))
        return 0
    if args.trident is None or args.dino is None:
        parser.error("--trident and --dino are required")
    from PIL import Image

    from ovdense.modeling.segmentors import rescale_size
    from ovdense.modeling.text import ClassEmbeddings, Vocabulary
    from ovdense.sam.model import build_sam

    torch.set_grad_enabled(False)
    cases = [c for c in CASES if c["name"] in args.cases.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="parity_trident_"))
    work.mkdir(parents=True, exist_ok=True)
    from ovdense.utils.official_code import export_tree

    trident_dir = export_tree(args.trident.resolve(), work / "Trident")
    dino_dir = export_tree(args.dino.resolve(), work / "dino")
    gen = torch.Generator().manual_seed(args.seed)
    import open_clip

    torch.manual_seed(args.seed)
    clip = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    _randomise(clip.visual, gen)
    torch.save(clip.state_dict(), work / "clip.pt")
    sam = build_sam("vit_b", pretrained=False)
    _randomise(sam, gen)
    torch.save(sam.state_dict(), work / "sam.pt")
    text = F.normalize(torch.randn(args.names, 512, generator=gen), dim=-1)
    torch.save(text, work / "text.pt")
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    images = {}
    for case in cases:
        img = _smooth_image(tuple(case["size"]), gen)
        Image.fromarray(img[0].permute(1, 2, 0).numpy()).save(work / f"{case['name']}.png")
        images[case["name"]] = img
        x = img.float() / 255
        hr, wr = rescale_size(*case["size"], case["short"])
        x = F.interpolate(x, size=(hr, wr), mode="bilinear", align_corners=False)
        torch.save((x - mean) / std, work / f"{case['name']}_input.pt")
    spec = {"work": str(work), "seed": args.seed, "cases": cases}
    (work / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(trident_dir), str(dino_dir)])}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(work / "spec.json")]
    if not all((work / f"{c['name']}_official.pt").is_file() for c in cases):
        proc = subprocess.run(cmd, env=env, cwd=str(trident_dir), capture_output=True, text=True)
        print(proc.stdout, end="")
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
    rows = []
    vocab = Vocabulary([f"c{i}" for i in range(args.names)])
    embeds = ClassEmbeddings(text, torch.arange(args.names), vocab)
    for case in cases:
        seg = _ovdense_segmentor(work, case)
        t = time.time()
        feats = seg.encode_image(images[case["name"]])
        ours = seg.name_logits(feats, embeds)
        ref = torch.load(work / f"{case['name']}_official.pt", weights_only=True)
        diff = (ours - ref).abs().max().item()
        agree = (ours.argmax(1) == ref.argmax(1)).float().mean().item()
        spread = (ref.amax(1) - ref.amin(1)).mean().item()
        row = {
            "case": case["name"],
            "size": "x".join(map(str, case["size"])),
            "grid": list(feats.dense.shape[-2:]),
            "max_abs": diff,
            "argmax": agree,
            "logit_spread": spread,
        }
        rows.append(row)
        print(
            f"{case['name']:11s} {row['size']:>9s} grid {row['grid']}  max|Δlogit| {diff:.2e}  "
            f"argmax agreement {agree:.4f}  (mean logit range {spread:.3f}; "
            f"ovdense {time.time() - t:.0f} s)"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
