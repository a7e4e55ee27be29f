#!/usr/bin/env python
"""Parity of ovdense's ResCLIP and SC-CLIP strategies with the official implementations, on
identical random CLIP weights (figures recorded in docs/parity.md).

The official code is read at run time from a git checkout or mirror of its repository
(``--resclip-repo``, ``--scclip-repo``; nothing is copied into ovdense): its ``clip/model.py``
(and ResCLIP's ``pamr.py``) are written to a temporary folder and imported with the modules the
forward pass does not use stubbed (``cv2``) and its ``.cuda()`` calls made no-ops, so it runs
on a CPU in float32. Both sides get the same random ViT-B/16 image tower (OpenAI architecture,
QuickGELU) and the same random unit "text" embeddings; the script prints, per method and input
size, the max abs difference of the patch logits (cosine with the text embeddings) and the
fraction of patches whose argmax agrees.

Example::

    python tools/parity_resclip_scclip.py --resclip-repo /path/ResCLIP --scclip-repo /path/SC-CLIP
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from ovdense.utils.official_code import read_file


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _import_official(repo: Path, files: list[str], module: str, tag: str) -> types.ModuleType:
    """``module`` of the official files, its sibling imports (``from pamr import PAMR``)
    served from the same files by name; nothing is added to ``sys.path``."""
    tmp = Path(tempfile.mkdtemp(prefix=f"official_{tag}_"))
    for f in files:
        (tmp / Path(f).name).write_text(read_file(repo, f))
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))  # used outside the forward pass
    for f in files:
        if Path(f).name != module:
            sys.modules[Path(f).stem] = _load_file(Path(f).stem, tmp / Path(f).name)
    return _load_file(f"{tag}_model", tmp / module)


def _random_clip(seed: int):
    import open_clip

    torch.manual_seed(seed)
    clip = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    with torch.no_grad():
        for name, p in clip.visual.named_parameters():
            if p.ndim == 1 and ("ln" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.ndim == 1:
                p.copy_(0.02 * torch.randn_like(p))
    return clip.eval()


def _official_tower(mod: types.ModuleType, clip) -> torch.nn.Module:
    v = clip.visual
    width = v.transformer.width
    tower = mod.VisionTransformer(
        input_resolution=v.image_size[0],
        patch_size=v.patch_size[0],
        width=width,
        layers=len(v.transformer.resblocks),
        heads=width // 64,
        output_dim=v.output_dim,
    )
    missing, unexpected = tower.load_state_dict(v.state_dict(), strict=False)
    assert not missing, missing
    return tower.eval()


def _compare(name: str, size, official_logits, ours_logits) -> dict:
    diff = (official_logits - ours_logits).abs().max().item()
    agree = (official_logits.argmax(-1) == ours_logits.argmax(-1)).float().mean().item()
    row = {"method": name, "size": f"{size[0]}x{size[1]}", "max_abs": diff, "argmax": agree}
    print(f"{name:28s} {row['size']:>8s}  max|Δlogit| {diff:.3e}  argmax agreement {agree:.4f}")
    return row


def _images(size, seed):
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    g = torch.Generator().manual_seed(seed)
    # smooth random images (blobs) so that PAMR and the label maps see structure
    low = torch.rand(1, 3, size[0] // 32 + 1, size[1] // 32 + 1, generator=g)
    img = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (img - mean) / std


def run_resclip(repo: Path, sizes, seed: int, num_names: int) -> list[dict]:
    from ovdense.modeling.backbones import dense_backbone_for
    from ovdense.modeling.strategies import ResCLIPAttention

    mod = _import_official(repo, ["clip/model.py", "pamr.py"], "model.py", "resclip")
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]

    class CPUPAMR(mod.PAMR):  # the official code moves its PAMR to "cuda"
        def to(self, *a, **k):
            return self

    mod.PAMR = CPUPAMR
    clip = _random_clip(seed)
    official = _official_tower(mod, clip)
    text = F.normalize(
        torch.randn(
            num_names, clip.visual.output_dim, generator=torch.Generator().manual_seed(seed + 1)
        ),
        dim=-1,
    )
    # (the settings of the paper's Context59 / COCO-Stuff configs; temp_thd low enough that
    # random weights give more than one label)
    cfg = {"rcs": (2.0, 0.4), "sfr": (1.8, 0.7), "thd": 0.05}
    rows = []
    for base, arch, attn in [
        ("naclip", "wo_resi", "naclip"),
        ("clearclip", "wo_resi", "clearclip"),
        ("sclip", "w_resi", "sclip"),
    ]:
        official.set_params(arch, attn, 5.0)
        official.addition_cache = {}
        for half in (False, True):
            strategy = ResCLIPAttention(
                base=base,
                base_kwargs={"std": 5.0} if base == "naclip" else None,
                rcs_weights=cfg["rcs"],
                sfr_weights=cfg["sfr"],
                temp_thd=cfg["thd"],
                logit_scale=40.0,
                sfr_half=half,
                text_embeds=text,
                keep_residual=(arch == "w_resi"),
            )
            ours = dense_backbone_for(clip, strategy, pos_interp="scale_factor").eval()
            for size in sizes:
                img = _images(size, seed + 2)
                with torch.no_grad():
                    feats = official(
                        img,
                        return_all=True,
                        use_rcs=True,
                        use_sfr=True,
                        temp_thd=cfg["thd"],
                        attn_sfr_weights=list(cfg["sfr"]),
                        attn_rcs_weights=list(cfg["rcs"]),
                        delete_same_entity=True,
                        query_features=text,
                        img=img,
                        patch_size=16,
                        logit_scale=40,
                        dtype=torch.float32,
                        align_corners=False,
                    )[:, 1:]
                    ref = F.normalize(feats, dim=-1)[0] @ text.T
                    dense = ours(img).dense[0]
                    got = dense.flatten(1).T @ text.T
                label = f"resclip+{base}" + (" (sfr_half)" if half else "")
                rows.append(_compare(label, size, ref, got))
    return rows


def run_scclip(repo: Path, sizes, seed: int, num_names: int) -> list[dict]:
    from ovdense.modeling.backbones import dense_backbone_for
    from ovdense.modeling.strategies import SCCLIPAttention

    mod = _import_official(repo, ["clip/model.py"], "model.py", "scclip")
    clip = _random_clip(seed)
    official = _official_tower(mod, clip)
    text = F.normalize(
        torch.randn(
            num_names, clip.visual.output_dim, generator=torch.Generator().manual_seed(seed + 1)
        ),
        dim=-1,
    )
    ours = dense_backbone_for(clip, SCCLIPAttention(), pos_interp="scale_factor").eval()
    rows = []
    for size in sizes:
        img = _images(size, seed + 2)
        with torch.no_grad():
            try:
                feats = official(img, return_all=True)
            except IndexError as err:  # its anomaly positions assume a square grid
                print(f"{'scclip':28s} {size[0]}x{size[1]:<4d}  official code fails: {err}")
                continue
            ref = F.normalize(feats, dim=-1)[0] @ text.T
            got = ours(img).dense[0].flatten(1).T @ text.T
        rows.append(_compare("scclip", size, ref, got))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resclip-repo", type=Path, help="checkout or git dir of ResCLIP")
    parser.add_argument("--scclip-repo", type=Path, help="checkout or git dir of SC-CLIP")
    parser.add_argument("--sizes", default="224x224,224x336", help="HxW,HxW,...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--names", type=int, default=21, help="number of random text embeddings")
    args = parser.parse_args(argv)
    sizes = [tuple(int(s) for s in wh.split("x")) for wh in args.sizes.split(",")]
    torch.set_grad_enabled(False)
    if args.resclip_repo:
        run_resclip(args.resclip_repo, sizes, args.seed, args.names)
    if args.scclip_repo:
        run_scclip(args.scclip_repo, sizes, args.seed, args.names)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
