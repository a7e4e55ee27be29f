"""Parity of ovdense's CAT-Seg with the official code (KU-CVLAB/CAT-Seg, detectron2).

    python tools/parity_catseg.py --repo /work/.mirror/KU-CVLAB+CAT-Seg/repo \\
        --official-python /tmp/catsegvenv/bin/python --out docs/parity_catseg.md

``--repo`` is a checkout or a git directory (exported with ``git archive HEAD``);
``--official-python`` a Python with detectron2, einops and timm (README "Parity with CAT-Seg's
code" says how to make one; torch stays the one ovdense runs on). Nothing of the repository is
imported by ovdense: the official model is built in a child process of that Python, with the
repository on the child's ``PYTHONPATH``.

What runs:

1. The child builds the official ``CATSeg`` model from the repository's own
   ``configs/vitb_384.yaml`` (or ``vitl_336.yaml``: ``--size L``) with ``eval.sh``'s evaluation
   settings (``TEST.SLIDING_WINDOW True``, ``POOLING_SIZES [1, 1]``). Its CLIP comes from
   ``cat_seg.third_party.clip``'s own ``build_model`` on a random OpenAI-layout state dict (the
   download in ``clip.load`` is replaced by that, nothing else); the aggregator keeps its own
   random initialisation, with the zero-initialised padding tokens and the LayerNorms made
   random so that every term shows. ``.cuda()`` calls are no-ops (CPU). It saves
   ``model.state_dict()`` in detectron2's checkpoint format (``{"model": ...}``), exactly what
   ``model_final.pth`` is, and runs the official inference on the images.
2. ovdense loads that file with the shipped preset (``seg/catseg_vitb16`` /
   ``seg/catseg_vitl14``, ``model.checkpoint=<file>``: the format detected, the CLIP built
   without weights) and segments the same images with the same class names.

Reported per image: the head's logits of each window and of the global view (``[5, N, 96,
96]``, before the sigmoid) — max abs difference; the final per-class probabilities at the
input size — max abs difference; and the share of pixels whose label (argmax) agrees.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = [
    "wall", "sky", "tree", "person", "road", "grass", "car", "water", "building", "chair",
    "table", "dog", "cat", "mountain", "flower", "boat",
]  # fmt: skip
IMAGE_SIZES = [(640, 640), (480, 720)]
_CLIP = {  # official CLIP_PRETRAINED -> (open_clip name, OpenAI state-dict sizes)
    "B": ("ViT-B/16", "ViT-B-16", "vitb_384.yaml", "seg/catseg_vitb16"),
    "L": ("ViT-L/14@336px", "ViT-L-14-336", "vitl_336.yaml", "seg/catseg_vitl14"),
}


# -- the official side (child process) --------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    """Build the official model, save its state dict, run its inference (see the module doc)."""
    import torch

    torch.manual_seed(args.seed)
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]  # CPU run
    work = Path(args.work)
    os.chdir(args.repo)  # the repository is on PYTHONPATH (set by the parent)
    from cat_seg import add_cat_seg_config
    from cat_seg.third_party import clip as official_clip
    from cat_seg.third_party import model_vpt
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.projects.deeplab import add_deeplab_config

    clip_sd = torch.load(args.clip_weights, map_location="cpu", weights_only=True)

    def load(name: str, device: Any = "cpu", jit: bool = False, prompt_depth: int = 0,
             prompt_length: int = 0) -> tuple[Any, None]:  # fmt: skip
        model = model_vpt.build_model(dict(clip_sd), prompt_depth, prompt_length)
        return model.to(device), None

    official_clip.load = load  # the one replacement: random weights instead of a download
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_cat_seg_config(cfg)
    cfg.merge_from_file(str(Path(args.repo) / "configs" / args.config))
    cfg.merge_from_list(
        [
            "MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON", args.classes,
            "MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON", args.classes,
            "TEST.SLIDING_WINDOW", "True",
            "MODEL.SEM_SEG_HEAD.POOLING_SIZES", "[1,1]",
            "MODEL.DEVICE", "cpu",
        ]
    )  # fmt: skip
    cfg.freeze()
    model = build_model(cfg).eval()
    with torch.no_grad():
        agg = model.sem_seg_head.predictor.transformer
        for name, p in list(agg.named_parameters()) + [
            (n, p) for n, p in model.named_parameters() if n.startswith("upsample")
        ]:
            if "padding" in name:
                p.copy_(torch.randn_like(p))
            elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif p.ndim == 1 and name.endswith("bias"):
                p.copy_(0.02 * torch.randn_like(p))
    torch.save({"model": model.state_dict(), "iteration": 0}, work / "official_model.pth")
    logits: list[Any] = []
    model.sem_seg_head.register_forward_hook(lambda m, i, o: logits.append(o.detach().clone()))
    out: dict[str, Any] = {"settings": cfg.dump()}
    for k, path in enumerate(args.images):
        img = torch.from_numpy(np.load(path)).permute(2, 0, 1).float()  # uint8 HWC -> CHW 0..255
        with torch.no_grad():
            res = model([{"image": img, "height": img.shape[1], "width": img.shape[2]}])
        out[f"probs{k}"] = res[0]["sem_seg"].numpy()
        out[f"logits{k}"] = logits.pop().numpy()
    np.savez(work / "official_out.npz", **out)


def run_official(args: argparse.Namespace, repo: Path, work: Path, images: list[Path]) -> None:
    cmd = [
        args.official_python, str(Path(__file__).resolve()), "--worker",
        "--repo", str(repo), "--work", str(work), "--config", _CLIP[args.size][2],
        "--clip-weights", str(work / "clip_openai.pt"), "--classes", str(work / "classes.json"),
        "--seed", str(args.seed), "--images", *map(str, images),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(repo)}  # the repository first, for the child only
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"the official CAT-Seg run failed (exit {proc.returncode}; -9: killed, e.g. out of "
            f"memory):\n{proc.stderr[-4000:]}"
        )


# -- shared set-up ----------------------------------------------------------------------------
def export_repo(src: str, dest: Path) -> Path:
    """A work tree of ``src``: itself when it has one, else ``git archive HEAD`` of it."""
    path = Path(src)
    if (path / "cat_seg").is_dir():
        return path.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", src, "archive", "HEAD"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def make_clip_weights(size: str, work: Path, seed: int) -> None:
    """A random CLIP of the official size in OpenAI's layout (what ``clip.load`` reads)."""
    import torch

    from ovdense.modeling.clip import load_clip

    torch.manual_seed(seed)
    clip = load_clip(_CLIP[size][1], quick_gelu=True)
    sd = {k: v.detach().clone() for k, v in clip.state_dict().items() if k != "attn_mask"}
    grid = clip.visual.grid_size[0]
    sd["input_resolution"] = torch.tensor(grid * clip.visual.patch_size[0])
    sd["context_length"] = torch.tensor(77)
    sd["vocab_size"] = torch.tensor(sd["token_embedding.weight"].shape[0])
    torch.save(sd, work / "clip_openai.pt")


def make_images(work: Path, seed: int) -> list[Path]:
    """Smooth random uint8 images (bilinear-upsampled noise), saved as ``.npy`` (HWC)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    paths = []
    for i, (h, w) in enumerate(IMAGE_SIZES):
        low = torch.rand(1, 3, h // 32, w // 32, generator=g)
        img = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        arr = (img[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        paths.append(work / f"image{i}.npy")
        np.save(paths[-1], arr)
    return paths


# -- the ovdense side -------------------------------------------------------------------------
def run_ovdense(size: str, checkpoint: Path, images: list[Path]) -> tuple[list[dict], Any]:
    import torch

    from ovdense.config import LazyConfig, instantiate
    from ovdense.model_zoo import CONFIGS_DIR

    cfg = LazyConfig.load(str(CONFIGS_DIR / f"{_CLIP[size][3]}.py"))
    cfg.model.checkpoint = str(checkpoint)
    seg = instantiate(cfg.model)
    logits: list[Any] = []
    seg.head.register_forward_hook(lambda m, i, o: logits.append(o.detach().clone()))
    results = []
    for path in images:
        img = torch.from_numpy(np.load(path)).permute(2, 0, 1)[None]  # uint8
        logits.clear()
        out = seg(img, CLASSES)
        assert out.probs is not None
        results.append({"probs": out.probs[0].numpy(), "logits": torch.cat(logits).numpy()})
    return results, seg


def compare(official: Any, ours: list[dict]) -> list[dict[str, Any]]:
    rows = []
    for k, mine in enumerate(ours):
        po, pm = official[f"probs{k}"], mine["probs"]
        lo, lm = official[f"logits{k}"], mine["logits"]
        rows.append(
            {
                "image": "x".join(map(str, IMAGE_SIZES[k])),
                "logits_max_abs": float(np.abs(lo - lm).max()),
                "logits_range": float(np.abs(lo).max()),
                "probs_max_abs": float(np.abs(po - pm).max()),
                "argmax_agree": float((po.argmax(0) == pm.argmax(0)).mean()),
                "labels": int(len(np.unique(po.argmax(0)))),
            }
        )
    return rows


def render(args: argparse.Namespace, rows: list[dict], revision: str, seconds: float) -> str:
    lines = [
        f"### ViT-{args.size} ({_CLIP[args.size][0]}, `configs/{_CLIP[args.size][2]}`)",
        "",
        f"Official commit `{revision}`, {len(CLASSES)} classes, seed {args.seed}, "
        f"{seconds:.0f} s on this machine's CPU.",
        "",
        "| image (H x W) | window logits: max abs diff (max abs value) | probabilities: max abs "
        "diff | argmax agreement | labels in the map |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['image']} | {r['logits_max_abs']:.2e} ({r['logits_range']:.1f}) | "
            f"{r['probs_max_abs']:.2e} | {100 * r['argmax_agree']:.4f} % | {r['labels']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repo", required=True, help="KU-CVLAB/CAT-Seg checkout or git directory")
    p.add_argument("--official-python", default=sys.executable, help="Python with detectron2")
    p.add_argument("--size", choices=sorted(_CLIP), default="B", help="ViT-B/16 or ViT-L/14")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="Markdown file to write the table to")
    p.add_argument("--keep", default=None, help="folder to keep the files in (else a temp dir)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="with --keep: reuse the official outputs already there (ovdense side only)",
    )
    # child-process arguments
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--clip-weights", help=argparse.SUPPRESS)
    p.add_argument("--classes", help=argparse.SUPPRESS)
    p.add_argument("--images", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        repo = export_repo(args.repo, work / "repo")
        revision = (
            subprocess.run(
                ["git", "-C", args.repo, "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            or "?"
        )
        images = [work / f"image{i}.npy" for i in range(len(IMAGE_SIZES))]
        if not (args.reuse and args.keep and (work / "official_out.npz").is_file()):
            (work / "classes.json").write_text(json.dumps(CLASSES))
            make_clip_weights(args.size, work, args.seed)
            images = make_images(work, args.seed)
            run_official(args, repo, work, images)
        official = np.load(work / "official_out.npz")
        ours, _ = run_ovdense(args.size, work / "official_model.pth", images)
        rows = compare(official, ours)
    text = render(args, rows, revision, time.time() - start)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
