"""Evaluate an open-vocabulary detector (F-ViT, ``ovdense.modeling.detection``): COCO box AP, or
LVIS's APr / APc / APf (box, and mask for a detector with a mask head) on an LVIS file.

Example (the shapes world; held-out compositions are the novel classes)::

    ovdense eval-det --config train/fvit_shapes --checkpoint output/fvit_shapes \\
        --dataset shapes_det

OV-COCO (48 base / 17 novel; ``instances_val2017.json`` or the OV val JSON)::

    ovdense eval-det --config train/fvit_vitb16_ovcoco --checkpoint output/fvit_ovcoco \\
        --json coco/annotations/instances_val2017.json --images coco/val2017 --split coco_ov

F-ViT's released checkpoints (CLIPSelf, MMDetection format) with their official test settings,
no config needed (the vocabulary's embeddings are the checkpoint's own)::

    ovdense eval-det --fvit fvit_eva_vitb16_ovcoco_clipself_proposals.pth \\
        --json coco/zero-shot/instances_val2017_all_2.json --images coco/val2017 --split coco_ov

OV-LVIS (LVIS v1 val, all 1203 categories; the rare ones are novel)::

    ovdense eval-det --config train/fvit_vitb16_ovlvis --checkpoint output/fvit_vitb16_ovlvis \
        --dataset lvis_v1_val --data-root datasets
    ovdense eval-det --fvit fvit_eva_vitb16_ovlvis_clipself_patches.pth \
        --dataset lvis_v1_val --data-root datasets

The vocabulary is every category of the ground truth (``--split coco_ov``: the 65 OV-COCO
classes); ``--split`` names the base / novel groups (``shapes``: the categories' ``held_out``
flag; ``coco_ov``: :mod:`ovdense.data.ov_splits`; ``lvis``: rare categories novel, common and
frequent base, and LVIS's evaluation; ``none``: no groups, every class novel for the
ensemble); ``auto`` picks ``lvis`` when every category has an LVIS ``frequency``. Prints COCO's
AP / AP50 and AP50 over novel / base / all classes (F-ViT's definition), or for LVIS AP / APr /
APc / APf of boxes and masks (:mod:`ovdense.evaluation.lvis`: the federated protocol, 300
detections per image), and writes ``<output>/results.json``. ``--checkpoint`` is a training run
folder (its last checkpoint) or a checkpoint file; ``--no-ensemble`` scores with the detector alone.
``key=value`` arguments override the config. (``python tools/eval_det.py ...`` runs the same.)
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import instantiate
from ..data import get_instances_files
from ..data.detection import CocoDetection
from ..data.ov_splits import (
    COCO_OV_BASE,
    COCO_OV_NOVEL,
    coco_ov_classes,
    lvis_frequency_groups,
)
from ..engine.checkpoint import load_checkpoint, read_last_checkpoint
from ..evaluation.base import DatasetEvaluator, format_metric, json_safe
from ..evaluation.detection import COCODetectionEvaluator
from ..evaluation.lvis import LVISEvaluator
from ..model_zoo import get_config
from ..utils.cli import (
    UserError,
    add_device_argument,
    add_output_argument,
    add_overrides_argument,
    resolve_device,
)
from ..utils.io import atomic_write_text

SPLITS = ("auto", "shapes", "coco_ov", "lvis", "none")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=None, help="detector training config (name or file)")
    p.add_argument(
        "--fvit", default=None, help="an F-ViT released checkpoint (instead of --config)"
    )
    p.add_argument("--fvit-preset", default=None, help="F-ViT preset (default: detected)")
    p.add_argument("--checkpoint", default=None, help="training run folder or checkpoint file")
    p.add_argument("--dataset", default=None, help="instances dataset of the catalog (shapes_det)")
    p.add_argument("--data-root", default=None, help="data root for --dataset")
    p.add_argument("--json", default=None, help="COCO instances JSON (instead of --dataset)")
    p.add_argument("--images", default=None, help="image folder of --json")
    p.add_argument("--split", default="auto", choices=SPLITS, help="base / novel groups")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward")
    p.add_argument("--no-ensemble", action="store_true", help="detector score alone")
    add_output_argument(p, "output folder (default: output/det/<config name>)")
    add_device_argument(p)
    add_overrides_argument(p)
    return p.parse_intermixed_args(argv)


def resolve_split(split: str, dataset: CocoDetection) -> str:
    """``auto`` -> ``shapes`` (``held_out`` flags), ``lvis`` (LVIS ``frequency`` fields),
    ``coco_ov`` (the 65 OV-COCO names present) or ``none``; other values are returned."""
    cats = dataset.coco.dataset["categories"]
    if split != "auto":
        return split
    if cats and all("held_out" in c for c in cats):
        return "shapes"
    if cats and all(c.get("frequency") in ("r", "c", "f") for c in cats):
        return "lvis"
    if {c["name"] for c in cats} >= set(coco_ov_classes()):
        return "coco_ov"
    return "none"


def _groups(split: str, dataset: CocoDetection) -> tuple[list[str], dict[str, list[str]]]:
    cats = dataset.coco.dataset["categories"]
    split = resolve_split(split, dataset)
    if split == "shapes":
        if not all("held_out" in c for c in cats):
            raise UserError("--split shapes needs categories with a 'held_out' flag.")
        names = [c["name"] for c in cats]
        groups = {
            "novel": [c["name"] for c in cats if c["held_out"]],
            "base": [c["name"] for c in cats if not c["held_out"]],
        }
        return names, groups
    if split == "coco_ov":
        return coco_ov_classes(), {"novel": list(COCO_OV_NOVEL), "base": list(COCO_OV_BASE)}
    if split == "lvis":
        try:
            freq = lvis_frequency_groups(cats)
        except ValueError as e:
            raise UserError(f"--split lvis: {e}") from e
        names = [c["name"] for c in sorted(cats, key=lambda c: int(c["id"]))]
        base = set(freq["c"]) | set(freq["f"])
        return names, {"novel": list(freq["r"]), "base": [n for n in names if n in base]}
    return [c["name"] for c in cats], {}


def has_mask_head(model: Any) -> bool:
    """Whether a detector predicts masks (F-ViT's OV-LVIS Mask R-CNN)."""
    return getattr(getattr(model, "roi_heads", None), "mask_head", None) is not None


def evaluate_detector(
    model: Any,
    dataset: CocoDetection,
    classes: Sequence[str],
    groups: dict[str, list[str]],
    batch_size: int = 4,
    ensemble: bool = True,
    device: str = "cpu",
    embeds: torch.Tensor | None = None,
    lvis: bool = False,
) -> dict[str, Any]:
    """Detect ``classes`` on every image of ``dataset`` and return the evaluator's results
    (``embeds``: their ``[K, D]`` embeddings; default ``model.encode(classes)``; ``lvis``: LVIS's
    evaluation, with masks when the model has a mask head)."""
    evaluator: DatasetEvaluator
    if lvis:
        types = ("bbox", "segm") if has_mask_head(model) else ("bbox",)
        evaluator = LVISEvaluator(dataset.coco, classes, groups, iou_types=types)
    else:
        evaluator = COCODetectionEvaluator(dataset.coco, classes, groups)
    base = set(groups.get("base", []))
    is_base = [c in base for c in classes]
    if embeds is None:
        embeds = model.encode(list(classes))
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        images = [it["image"].to(device) for it in items]
        outputs = model.predict(images, embeds, is_base=is_base, ensemble=ensemble)
        evaluator.process([it["image_id"] for it in items], outputs)
    return evaluator.evaluate()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; user errors are raised (``run_cli`` shows them as one line)."""
    args = parse_args(argv)
    if (args.dataset is None) == (args.json is None):
        raise UserError("give exactly one of --dataset or --json (with --images).")
    if args.json is not None:
        if args.images is None:
            raise UserError("--json needs --images (the image folder).")
        json_path, image_dir = Path(args.json), Path(args.images)
    else:
        json_path, image_dir = get_instances_files(args.dataset, args.data_root)
    device = resolve_device(args.device)
    if (args.config is None) == (args.fvit is None):
        raise UserError("give exactly one of --config or --fvit (an F-ViT checkpoint).")
    fvit = None
    if args.fvit is not None:
        from ..modeling.convert.fvit import load_fvit

        fvit = load_fvit(args.fvit, preset=args.fvit_preset)
        model = fvit.detector
    else:
        cfg = get_config(args.config, args.opts)
        model = instantiate(cfg.model)
    if args.checkpoint is not None and fvit is None:
        ckpt = Path(args.checkpoint)
        if ckpt.is_dir():
            found = read_last_checkpoint(ckpt)
            if found is None:
                raise UserError(f"No checkpoint in '{ckpt}' (no last_checkpoint file).")
            ckpt = found
        model.load_state_dict(load_checkpoint(ckpt)["model"])
    model.to(device).eval()
    dataset = CocoDetection(json_path, image_dir, limit=args.limit)
    split = resolve_split(args.split, dataset)
    classes, groups = _groups(split, dataset)
    embeds = None
    if fvit is not None:
        try:
            embeds = fvit.embeds_for(classes).to(device)
        except (KeyError, ValueError) as e:
            raise UserError(f"{e}") from e
    start = time.time()
    with torch.no_grad():
        results = evaluate_detector(
            model,
            dataset,
            classes,
            groups,
            args.batch_size,
            not args.no_ensemble,
            device,
            embeds,
            lvis=split == "lvis",
        )
    bbox = results["bbox"]
    name = Path(str(args.config or args.fvit)).with_suffix("").name
    out = Path(args.output) if args.output else Path("output/det") / name
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "config": str(args.config or args.fvit),
        "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
        "images": len(dataset),
        "ensemble": not args.no_ensemble,
        "seconds": round(time.time() - start, 1),
        **results,
    }
    atomic_write_text(out / "results.json", json.dumps(json_safe(record), indent=2))
    if split == "lvis":
        keys = ["AP", "APr", "APc", "APf", "AP50"]
        print(" | ".join(["", *keys]))
        for kind, res in results.items():
            print(" | ".join([kind, *(format_metric(res[k]) for k in keys)]))
    else:
        keys = ["AP", "AP50", *[f"AP50_{g}" for g in groups], "AP50_all"]
        print(" | ".join(keys))
        print(" | ".join(format_metric(bbox[k]) for k in keys))
    print(f"results: {out / 'results.json'}")
    return 0
