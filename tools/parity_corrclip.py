#!/usr/bin/env python
"""Parity of ovdense's CorrCLIP strategy with the official implementation, on identical random
CLIP ViT-B/16 weights (figures recorded in docs/parity.md).

The official code is read at run time from a git checkout or mirror of its repository
(``--repo``; nothing is copied into ovdense): its patched open_clip ``transformer.py`` (whose
``VisionTransformer.forward`` is CorrCLIP's whole image side: mask merging with scikit-learn's
DBSCAN, scope reconstruction, the mask class tokens, the spatial and semantic branches and their
fusion) and the two helper modules it imports are written to a temporary package and imported
from there (``cv2``, unused by the forward pass, is stubbed; nothing is added to ``sys.path``).
It needs scikit-learn (``pip install scikit-learn`` in the environment running this script).

Both sides get the same random ViT-B/16 image tower (QuickGELU, as MetaCLIP's), the same DINO
ViT-B/8 features (query + key of the last block, from ovdense's random ``dino_vitb8``: the
official forward takes them as an input) and the same region map; the script prints, per crop
size, the max abs difference of the patch logits (cosine with random unit "text" embeddings, on
the DINO grid) and the fraction of patches whose argmax agrees.

Example::

    python tools/parity_corrclip.py --repo /path/CorrCLIP
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

OFFICIAL_FILES = ("transformer.py", "utils.py", "pos_embed.py")


def _import_official(repo: Path) -> types.ModuleType:
    """The official ``open_clip/transformer.py`` as ``corrclip_official.transformer``."""
    tmp = Path(tempfile.mkdtemp(prefix="official_corrclip_")) / "corrclip_official"
    tmp.mkdir()
    (tmp / "__init__.py").write_text("")
    for f in OFFICIAL_FILES:
        (tmp / f).write_text(read_file(repo, f"CorrCLIPv1/open_clip/{f}"))
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))  # imported, unused by the forward
    spec = importlib.util.spec_from_file_location(
        "corrclip_official", tmp / "__init__.py", submodule_search_locations=[str(tmp)]
    )
    assert spec is not None and spec.loader is not None
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["corrclip_official"] = pkg
    spec.loader.exec_module(pkg)
    import importlib as _il

    return _il.import_module("corrclip_official.transformer")


def _random_clip(seed: int):
    from ovdense.modeling.clip import load_clip

    torch.manual_seed(seed)
    clip = load_clip("ViT-B-16-quickgelu", pretrained=None)
    with torch.no_grad():  # every weight random (open_clip zero-initialises some)
        for name, p in clip.visual.named_parameters():
            if p.ndim == 1 and "ln" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.ndim == 1:
                p.copy_(0.02 * torch.randn_like(p))
    return clip.eval()


def _official_tower(mod: types.ModuleType, clip) -> torch.nn.Module:
    v = clip.visual
    tower = mod.VisionTransformer(
        image_size=224,
        patch_size=16,
        width=v.transformer.width,
        layers=len(v.transformer.resblocks),
        heads=v.transformer.resblocks[0].attn.num_heads,
        mlp_ratio=4.0,
        output_dim=v.output_dim,
        act_layer=mod.QuickGELU,
    )
    tower.load_state_dict(v.state_dict())
    return tower.eval()


def _regions(size: tuple[int, int], seed: int) -> torch.Tensor:
    """A region map with unsegmented pixels (0), boxes and blobs (ids 1..)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    r = torch.zeros(h, w, dtype=torch.int32)
    for k in range(1, 9):
        y, x = (
            torch.randint(0, h - 40, (1,), generator=g),
            torch.randint(0, w - 40, (1,), generator=g),
        )
        dy, dx = (
            torch.randint(30, h // 2, (1,), generator=g),
            torch.randint(30, w // 2, (1,), generator=g),
        )
        r[y : y + dy, x : x + dx] = k
    return r


def _images(size: tuple[int, int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, size[0] // 16, size[1] // 16, generator=g)
    x = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    return (x + 0.05 * torch.randn(1, 3, *size, generator=g)).clamp(0, 1)


def run(repo: Path, sizes: list[tuple[int, int]], seed: int, num_names: int) -> list[dict]:
    from ovdense.modeling.backbones import dense_backbone_for
    from ovdense.modeling.strategies import REGIONS, CorrCLIPAttention
    from ovdense.modeling.vfm import build_vfm

    mod = _import_official(repo)
    clip = _random_clip(seed)
    official = _official_tower(mod, clip)
    torch.manual_seed(seed + 1)
    dino = build_vfm("dino_vitb8", pretrained=False, feature="query_key").eval()
    strategy = CorrCLIPAttention(vfm=dino)
    ours = dense_backbone_for(clip, strategy, pos_interp="scale_factor").eval()
    text = F.normalize(torch.randn(num_names, clip.visual.output_dim), dim=-1)
    mean = torch.tensor(ours.mean).view(1, 3, 1, 1)
    std = torch.tensor(ours.std).view(1, 3, 1, 1)
    rows = []
    for i, size in enumerate(sizes):
        images01 = _images(size, seed + 10 + i)
        x = (images01 - mean) / std
        regions = _regions(size, seed + 20 + i)
        with torch.no_grad():
            got = ours(x, {REGIONS: regions[None]}).dense  # [1, D, h, w]
            feats = dino(images01)  # [1, C, h, w]
            grid = tuple(feats.shape[-2:])
            dino_feats = F.normalize(feats.flatten(2).transpose(1, 2), dim=-1)
            want = official(x, dino_feats, grid, regions[None, None])  # [1, h * w, D]
        ours_logits = got.flatten(2)[0].T @ text.T
        official_logits = F.normalize(want[0], dim=-1) @ text.T
        rows.append(
            {
                "size": size,
                "grid": grid,
                "regions": int(torch.unique(regions).numel()),
                "max_abs_logit_diff": float((ours_logits - official_logits).abs().max()),
                "argmax_agree": float(
                    (ours_logits.argmax(-1) == official_logits.argmax(-1)).float().mean()
                ),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--repo", type=Path, required=True, help="CorrCLIP checkout or git mirror")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--names", type=int, default=20, help="random text embeddings")
    p.add_argument(
        "--sizes", default="336x336,224x336", help="crop sizes HxW (multiples of 56, as the code)"
    )
    args = p.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    torch.set_grad_enabled(False)
    for row in run(args.repo, sizes, args.seed, args.names):  # type: ignore[arg-type]
        print(
            f"corrclip {row['size'][0]}x{row['size'][1]} (DINO grid {row['grid'][0]}x"
            f"{row['grid'][1]}, {row['regions']} region labels): max |Δ logit| "
            f"{row['max_abs_logit_diff']:.2e}, argmax agree {100 * row['argmax_agree']:.2f}%"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
