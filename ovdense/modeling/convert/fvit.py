"""F-ViT's released detectors (CLIPSelf repository, MMDetection 2.x checkpoints) -> ovdense's
:class:`~ovdense.modeling.detection.FViTDetector`.

An F-ViT checkpoint (``fvit_eva_vitb16_ovcoco_clipself_proposals.pth`` and its siblings) is
mmcv's ``{"meta", "state_dict", "optimizer"}`` with the official module tree's names:

=========================================== ==============================================
official (``F-ViT/models``, mmdet 2.x)       ovdense
=========================================== ==============================================
``backbone.visual.*`` (EVA-CLIP names)       ``backbone.visual.trunk.*`` (timm ``Eva``)
``backbone.interpolate{1,2}.*``              ``pyramid.resamplers.{0,1}.*``
``neck.{lateral,fpn}_convs.i.{conv,bn}.*``   ``pyramid.fpn.{inner,layer}_blocks.i.{0,1}.*``
``rpn_head.rpn_conv.i.{conv,bn}.*``          ``rpn.head.conv.i.{0,1}.*``
``rpn_head.rpn_{cls,reg}.*``                 ``rpn.head.{cls_logits,bbox_pred}.*``
``roi_head.bbox_head.shared_convs.i.*``      ``roi_heads.box_head.shared.i.{0,1}.*``
``roi_head.bbox_head.shared_fcs.j.*``        ``roi_heads.box_head.shared.(convs + 1 + 2j).*``
``roi_head.bbox_head.{cls,reg}_fcs.0.*``     ``roi_heads.box_head.{cls,reg}_fc.*``
``roi_head.bbox_head.fc_reg.*``              ``roi_heads.box_head.bbox_pred.*``
``roi_head.bbox_head.detect_temperature``    ``roi_heads.box_predictor.temperature``
``roi_head.bbox_head.all_embeddings``        the vocabulary ``[K, D]`` + background (last)
``roi_head.bbox_head.bg_embedding``          ``roi_heads.box_predictor.background`` (learned)
``roi_head.mask_head.{convs,upsample}.*``    ``roi_heads.mask_head.{convs,upsample}.*``
``roi_head.mask_head.conv_logits.*``         ``roi_heads.mask_head.logits.*``
``roi_head.bbox_head.fc_cls.*``              not used (F-ViT classifies with the embeddings)
=========================================== ==============================================

The image tower's EVA-CLIP names are renamed by
:func:`~ovdense.modeling.clip.eva_convert.convert_eva_clip_state_dict` (timm's own filter). The
test-time settings of each released model come from its official config (:data:`FVIT_PRESETS`:
image size, ensemble temperature / alpha / beta, score threshold, NMS IoU, detections per
image, mask head, RPN norm); the model is built with ``mmdet_ops=True`` (mmdet's anchors, RoI
pooling, square padding, ImageNet normalisation, as F-ViT runs). The checkpoint holds only the
image tower: the vocabulary is the released embeddings (``all_embeddings``); to detect other
names give an EVA02-CLIP with its text tower (``text_clip``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from ...utils.weights import CheckpointFormatError, flatten_state_dict, load_weights_file
from ..detection.fvit import IMAGENET_MEAN, IMAGENET_STD, FViTDetector, build_fvit

__all__ = [
    "FVIT_PRESETS",
    "FViTCheckpoint",
    "FViTPreset",
    "build_fvit_from_state_dict",
    "convert_fvit_state_dict",
    "detect_fvit_preset",
    "export_fvit_state_dict",
    "is_fvit_state_dict",
    "load_fvit",
    "read_fvit_checkpoint",
]

logger = logging.getLogger(__name__)

_EXPECTED = (
    "F-ViT's MMDetection checkpoint (keys backbone.visual.*, backbone.interpolate1.*, neck.*, "
    "rpn_head.*, roi_head.bbox_head.all_embeddings, as in fvit_eva_vitb16_ovcoco_*.pth)"
)


@dataclass(frozen=True)
class FViTPreset:
    """The architecture and official test-time settings of one released F-ViT model.

    ``clip_model`` is the open_clip architecture of the image tower (``width`` / ``patch`` /
    ``depth`` are checked against the checkpoint); the scoring fields are the config's
    ``vlm_temperature``, ``alpha``, ``beta`` and ``test_cfg.rcnn`` (``score_thr``, ``nms``,
    ``max_per_img``); ``dataset`` names the vocabulary (``"coco_ov"``: 65 classes in COCO's
    order; ``"lvis"``: the 1203 LVIS v1 classes in category-id order).
    """

    name: str
    clip_model: str
    width: int
    patch: int
    depth: int
    out_indices: tuple[int, ...]
    image_size: int
    fc_dim: int
    clip_temperature: float
    alpha: float
    beta: float
    score_thresh: float
    nms_thresh: float
    detections_per_img: int
    rpn_norm: bool
    mask_head: bool
    dataset: str
    num_classes: int

    @property
    def size_name(self) -> str:
        return (
            f"ViT-{'B' if self.width == 768 else 'L' if self.width == 1024 else '?'}/{self.patch}"
        )


_B16: dict[str, Any] = dict(
    clip_model="EVA02-B-16", width=768, patch=16, depth=12, out_indices=(3, 5, 7, 11)
)
_L14: dict[str, Any] = dict(
    clip_model="EVA02-L-14-336", width=1024, patch=14, depth=24, out_indices=(6, 10, 14, 23)
)
_COCO: dict[str, Any] = dict(
    clip_temperature=75.0,
    alpha=0.1,
    beta=0.8,
    score_thresh=0.01,
    nms_thresh=0.4,
    detections_per_img=100,
    rpn_norm=False,
    mask_head=False,
    dataset="coco_ov",
    num_classes=65,
)
_LVIS: dict[str, Any] = dict(
    clip_temperature=50.0,
    alpha=0.1,
    score_thresh=1e-4,
    nms_thresh=0.5,
    detections_per_img=300,
    rpn_norm=True,
    mask_head=True,
    dataset="lvis",
    num_classes=1203,
)

#: ``F-ViT/configs/ov_{coco,lvis}/fvit_vit{b16,l14}_upsample_fpn_*``: the released models.
FVIT_PRESETS: dict[str, FViTPreset] = {
    "ovcoco_vitb16": FViTPreset("ovcoco_vitb16", **_B16, image_size=640, fc_dim=512, **_COCO),
    "ovcoco_vitl14": FViTPreset("ovcoco_vitl14", **_L14, image_size=896, fc_dim=768, **_COCO),
    "ovlvis_vitb16": FViTPreset(
        "ovlvis_vitb16",
        **_B16,
        image_size=1024,
        fc_dim=512,
        beta=0.6,
        **_LVIS,
    ),
    "ovlvis_vitl14": FViTPreset(
        "ovlvis_vitl14",
        **_L14,
        image_size=896,
        fc_dim=768,
        beta=0.4,
        **_LVIS,
    ),
}


@dataclass
class FViTCheckpoint:
    """A released F-ViT loaded into ovdense.

    Attributes:
        detector: the :class:`FViTDetector` (eval mode).
        preset: the settings it was built with.
        classes: the vocabulary's names (``None`` when unknown: LVIS checkpoints without
            ``meta.CLASSES``; the columns are then LVIS's categories in id order).
        class_embeds: ``[K, D]`` the released class embeddings (normalised), the order of
            ``classes``.
    """

    detector: FViTDetector
    preset: FViTPreset
    classes: list[str] | None
    class_embeds: Tensor

    def embeds_for(self, names: Sequence[str]) -> Tensor:
        """``[K', D]`` the released embeddings of ``names`` (each must be in ``classes``)."""
        if self.classes is None:
            raise ValueError("This checkpoint's class names are unknown; index class_embeds.")
        index = {n: i for i, n in enumerate(self.classes)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(
                f"{len(missing)} classes are not in the checkpoint's vocabulary (e.g. "
                f"{missing[:3]}); give text_clip= to embed new names."
            )
        return self.class_embeds[[index[n] for n in names]]


def coco_ov_classes_coco_order() -> list[str]:
    """The 65 OV-COCO classes in COCO's category order (F-ViT's ``mscoco_65_classes.json``)."""
    from ...data.converters.coco import COCO_STUFF_CLASSES
    from ...data.ov_splits import coco_ov_classes

    wanted = set(coco_ov_classes())
    return [n for _, n in sorted(COCO_STUFF_CLASSES.items()) if n in wanted]


def read_fvit_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read an F-ViT (mmcv) checkpoint with ``weights_only=True``: the flat state dict and the
    ``meta`` dict (empty when absent).

    Raises:
        CheckpointFormatError: unreadable, truncated, or not an F-ViT checkpoint (one sentence
            naming the expected format and what was found).
    """
    obj = load_weights_file(path, what="F-ViT checkpoint", hint=f"expected {_EXPECTED}")
    meta = obj.get("meta", {}) if isinstance(obj, Mapping) else {}
    sd = flatten_state_dict(obj, source=f"F-ViT checkpoint {path}", nesting=("state_dict",))
    check_fvit_state_dict(sd, source=str(path))
    return sd, dict(meta) if isinstance(meta, Mapping) else {}


def is_fvit_state_dict(sd: Mapping[str, Any]) -> bool:
    """True when ``sd`` has F-ViT's official names (image tower and embeddings)."""
    return "roi_head.bbox_head.all_embeddings" in sd and any(
        k.startswith("backbone.visual.") for k in sd
    )


def _describe(sd: Mapping[str, Any]) -> str:
    keys = list(sd)
    if any(k.startswith(("visual.blocks.", "blocks.")) for k in keys):
        return "an EVA-CLIP / CLIPSelf CLIP checkpoint (visual.blocks.*; use convert-eva-clip)"
    if any(k.startswith(("visual.trunk.", "visual.transformer.")) for k in keys):
        return "an open_clip CLIP checkpoint"
    if any(k.startswith(("pyramid.", "roi_heads.")) for k in keys):
        return "an ovdense detector state dict (load it with load_state_dict)"
    if any(k.startswith(("backbone.", "roi_head.", "rpn_head.")) for k in keys):
        return "an MMDetection checkpoint of another model (no roi_head.bbox_head.all_embeddings)"
    return f"{len(keys)} tensors such as {sorted(keys)[:3]}"


def check_fvit_state_dict(sd: Mapping[str, Any], source: str = "The checkpoint") -> None:
    """Raise :class:`CheckpointFormatError` unless ``sd`` is a complete F-ViT state dict (the
    image tower, pyramid, RPN and box head all present, mask head complete when present)."""
    if not is_fvit_state_dict(sd):
        raise CheckpointFormatError(f"{source}: expected {_EXPECTED}, found {_describe(sd)}.")
    required = [
        "backbone.visual.patch_embed.proj.weight",
        "backbone.visual.blocks.0.norm1.weight",
        "backbone.interpolate1.0.weight",
        "backbone.interpolate2.0.weight",
        "neck.lateral_convs.0.conv.weight",
        "neck.fpn_convs.0.conv.weight",
        "rpn_head.rpn_cls.weight",
        "rpn_head.rpn_reg.weight",
        "roi_head.bbox_head.shared_fcs.0.weight",
        "roi_head.bbox_head.cls_fcs.0.weight",
        "roi_head.bbox_head.fc_reg.weight",
        "roi_head.bbox_head.detect_temperature",
    ]
    missing = [k for k in required if k not in sd]
    depth = _depth(sd)
    last = f"backbone.visual.blocks.{depth - 1}.mlp.w3.weight"
    if depth and last not in sd and f"backbone.visual.blocks.{depth - 1}.mlp.fc2.weight" not in sd:
        missing.append(last)
    if any(k.startswith("roi_head.mask_head.") for k in sd):
        missing += [k for k in ("roi_head.mask_head.conv_logits.weight",) if k not in sd]
    if missing:
        raise CheckpointFormatError(
            f"{source}: expected {_EXPECTED}, found an incomplete one ({len(sd)} tensors, "
            f"missing {missing[:3]}): the file is truncated or from another model."
        )


def _depth(sd: Mapping[str, Any]) -> int:
    ids = {int(m.group(1)) for k in sd if (m := re.match(r"backbone\.visual\.blocks\.(\d+)\.", k))}
    return max(ids) + 1 if ids else 0


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    return len({m.group(1) for k in sd if (m := re.match(pattern, k))})


def detect_fvit_preset(
    sd: Mapping[str, Tensor], preset: str | FViTPreset | None = None
) -> FViTPreset:
    """The preset of an F-ViT state dict: the one named (checked against the tensors), or the
    released model whose image tower width and vocabulary size it has.

    Raises:
        CheckpointFormatError: the tensors do not fit the named preset, or fit none.
    """
    width = int(sd["backbone.visual.patch_embed.proj.weight"].shape[0])
    patch = int(sd["backbone.visual.patch_embed.proj.weight"].shape[-1])
    depth = _depth(sd)
    k = int(sd["roi_head.bbox_head.all_embeddings"].shape[1]) - 1
    has_mask = any(key.startswith("roi_head.mask_head.") for key in sd)
    found = f"width {width}, patch {patch}, {depth} blocks, {k} classes" + (
        ", a mask head" if has_mask else ""
    )
    if preset is None:
        for p in FVIT_PRESETS.values():
            if (p.width, p.patch, p.depth, p.num_classes, p.mask_head) == (
                width,
                patch,
                depth,
                k,
                has_mask,
            ):
                return p
        raise CheckpointFormatError(
            "Expected one of F-ViT's released models ("
            + "; ".join(
                f"{p.name}: {p.size_name}, {p.num_classes} classes" for p in FVIT_PRESETS.values()
            )
            + f"), found {found}: pass a preset (FViTPreset) for other F-ViT models."
        )
    p = FVIT_PRESETS[preset] if isinstance(preset, str) else preset
    if (p.width, p.patch, p.depth) != (width, patch, depth) or p.mask_head != has_mask:
        raise CheckpointFormatError(
            f"Expected F-ViT {p.name} ({p.size_name}: width {p.width}, patch {p.patch}, "
            f"{p.depth} blocks{', a mask head' if p.mask_head else ''}), found {found}."
        )
    return p


def _rename(key: str, num_convs: int) -> str | None:
    """The ovdense name of an official non-image-tower key (``None``: not used)."""
    k = key.replace(".bn.", ".1.").replace(".conv.", ".0.")
    rules: list[tuple[str, str]] = [
        (r"backbone\.interpolate1\.(.*)", r"pyramid.resamplers.0.\1"),
        (r"backbone\.interpolate2\.0\.(.*)", r"pyramid.resamplers.1.\1"),
        (r"neck\.lateral_convs\.(.*)", r"pyramid.fpn.inner_blocks.\1"),
        (r"neck\.fpn_convs\.(.*)", r"pyramid.fpn.layer_blocks.\1"),
        (r"rpn_head\.rpn_conv\.(.*)", r"rpn.head.conv.\1"),
        (r"rpn_head\.rpn_cls\.(.*)", r"rpn.head.cls_logits.\1"),
        (r"rpn_head\.rpn_reg\.(.*)", r"rpn.head.bbox_pred.\1"),
        (r"roi_head\.bbox_head\.shared_convs\.(.*)", r"roi_heads.box_head.shared.\1"),
        (r"roi_head\.bbox_head\.cls_fcs\.0\.(.*)", r"roi_heads.box_head.cls_fc.\1"),
        (r"roi_head\.bbox_head\.reg_fcs\.0\.(.*)", r"roi_heads.box_head.reg_fc.\1"),
        (r"roi_head\.bbox_head\.fc_reg\.(.*)", r"roi_heads.box_head.bbox_pred.\1"),
        (r"roi_head\.bbox_head\.detect_temperature", r"roi_heads.box_predictor.temperature"),
        (r"roi_head\.mask_head\.convs\.(.*)", r"roi_heads.mask_head.convs.\1"),
        (r"roi_head\.mask_head\.upsample\.(.*)", r"roi_heads.mask_head.upsample.\1"),
        (r"roi_head\.mask_head\.conv_logits\.(.*)", r"roi_heads.mask_head.logits.\1"),
    ]
    m = re.fullmatch(r"roi_head\.bbox_head\.shared_fcs\.(\d+)\.(.*)", key)
    if m:
        return f"roi_heads.box_head.shared.{num_convs + 1 + 2 * int(m.group(1))}.{m.group(2)}"
    for pat, rep in rules:
        if re.fullmatch(pat, k):
            return re.sub(pat, rep, k)
    return None


_UNUSED = ("roi_head.bbox_head.fc_cls.",)
_SPECIAL = ("roi_head.bbox_head.all_embeddings", "roi_head.bbox_head.bg_embedding")


def convert_fvit_state_dict(
    sd: Mapping[str, Tensor], clip_model: nn.Module
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Rename an official F-ViT state dict to ovdense's detector names.

    Args:
        sd: the flat official state dict.
        clip_model: an open_clip model of the checkpoint's EVA architecture (its image tower
            receives ``backbone.visual.*``; used for names and grid only).

    Returns:
        ``(state_dict, class_embeds [K, D], background [D])``: the detector's tensors (without
        ``train_class_embeds`` and the text encoder), the released class embeddings and the
        (normalised) background embedding.

    Raises:
        CheckpointFormatError: keys that F-ViT's model does not have.
    """
    from ..clip.eva_convert import convert_eva_clip_state_dict

    num_convs = _count(sd, r"roi_head\.bbox_head\.shared_convs\.(\d+)\.")
    visual = {
        "visual." + k[len("backbone.visual.") :]: v
        for k, v in sd.items()
        if k.startswith("backbone.visual.")
    }
    out = {
        "backbone." + k: v
        for k, v in convert_eva_clip_state_dict(visual, clip_model).items()
        if k.startswith("visual.")
    }
    unknown = []
    for k, v in sd.items():
        if k.startswith("backbone.visual.") or k.startswith(_UNUSED) or k in _SPECIAL:
            continue
        new = _rename(k, num_convs)
        if new is None:
            unknown.append(k)
        else:
            out[new] = v
    if unknown:
        raise CheckpointFormatError(
            f"Expected {_EXPECTED}, found {len(unknown)} keys F-ViT's model does not have "
            f"(e.g. {unknown[:3]})."
        )
    all_embed = sd["roi_head.bbox_head.all_embeddings"].float()  # [D, K + 1], background last
    class_embeds = torch.nn.functional.normalize(all_embed[:, :-1].T.contiguous(), dim=-1)
    bg = sd.get("roi_head.bbox_head.bg_embedding")
    background = (all_embed[:, -1] if bg is None else bg.float().reshape(-1)).clone()
    out["roi_heads.box_predictor.background"] = background
    return out, class_embeds, torch.nn.functional.normalize(background, dim=0)


def export_fvit_state_dict(
    detector: FViTDetector, class_embeds: Tensor, clip_model: nn.Module | None = None
) -> dict[str, Tensor]:
    """The inverse of :func:`convert_fvit_state_dict`: ``detector`` in F-ViT's official names
    (``all_embeddings`` = ``class_embeds`` ``[K, D]`` then the background, as columns).

    ``fc_cls`` (in F-ViT's checkpoints, never used) is written as zeros ``[K + 1, fc]`` so the
    file has every key of the official model. The image tower is written in EVA-CLIP names
    (timm's filter inverted by name; RoPE buffers are recomputed by F-ViT's model and not
    written).
    """
    sd = {k: v for k, v in detector.state_dict().items() if not k.startswith("text_encoder.")}
    inverse: dict[str, str] = {}
    num_convs = sum(1 for m in detector.roi_heads.box_head.shared if isinstance(m, nn.Sequential))
    probe = _official_names(detector, num_convs)
    for off in probe:
        new = _rename(off, num_convs)
        if new is not None:
            inverse[new] = off
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if k.startswith("backbone.visual.trunk."):
            out["backbone.visual." + _eva_clip_name(k[len("backbone.visual.trunk.") :])] = v
        elif k in inverse:
            out[inverse[k]] = v
    bg = detector.roi_heads.box_predictor.background.detach().float()
    emb = torch.nn.functional.normalize(class_embeds.float(), dim=-1)
    out["roi_head.bbox_head.all_embeddings"] = torch.cat(
        [emb, torch.nn.functional.normalize(bg, dim=0)[None]]
    ).T.contiguous()
    if isinstance(detector.roi_heads.box_predictor.background, nn.Parameter):
        out["roi_head.bbox_head.bg_embedding"] = bg[:, None].clone()
    fc = detector.roi_heads.box_head.cls_fc.in_features
    out["roi_head.bbox_head.fc_cls.weight"] = torch.zeros(emb.shape[0] + 1, fc)
    out["roi_head.bbox_head.fc_cls.bias"] = torch.zeros(emb.shape[0] + 1)
    return out


def _official_names(detector: FViTDetector, num_convs: int) -> list[str]:
    """Every official key name the detector's non-tower modules correspond to."""
    names: list[str] = []
    pyr = detector.pyramid
    for i, _ in enumerate(pyr.fpn.inner_blocks):
        for part in ("conv.weight", "conv.bias", *(f"bn.{b}" for b in _BN)):
            names.append(f"neck.lateral_convs.{i}.{part}")
            names.append(f"neck.fpn_convs.{i}.{part}")
    for part in ("0.weight", "0.bias", *(f"1.{b}" for b in _BN), "3.weight", "3.bias"):
        names.append(f"backbone.interpolate1.{part}")
    names += ["backbone.interpolate2.0.weight", "backbone.interpolate2.0.bias"]
    for i in range(2):
        for part in ("conv.weight", "conv.bias", *(f"bn.{b}" for b in _BN)):
            names.append(f"rpn_head.rpn_conv.{i}.{part}")
    for head in ("rpn_cls", "rpn_reg"):
        names += [f"rpn_head.{head}.weight", f"rpn_head.{head}.bias"]
    mask_head = detector.roi_heads.mask_head
    mask_convs = 0 if mask_head is None else len(cast(nn.Sequential, mask_head.convs))
    for i in range(max(num_convs, mask_convs)):
        for part in ("conv.weight", *(f"bn.{b}" for b in _BN)):
            names.append(f"roi_head.bbox_head.shared_convs.{i}.{part}")
            names.append(f"roi_head.mask_head.convs.{i}.{part}")
    for j in range(2):
        names += [
            f"roi_head.bbox_head.shared_fcs.{j}.weight",
            f"roi_head.bbox_head.shared_fcs.{j}.bias",
        ]
    for part in ("cls_fcs.0", "reg_fcs.0", "fc_reg"):
        names += [f"roi_head.bbox_head.{part}.weight", f"roi_head.bbox_head.{part}.bias"]
    names.append("roi_head.bbox_head.detect_temperature")
    for part in ("upsample", "conv_logits"):
        names += [f"roi_head.mask_head.{part}.weight", f"roi_head.mask_head.{part}.bias"]
    return names


_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _eva_clip_name(timm_key: str) -> str:
    """timm ``Eva`` name -> EVA-CLIP name (the inverse of timm's ``checkpoint_filter_fn``
    renames for EVA02 towers)."""
    k = timm_key
    for a, b in (
        ("attn.q_proj.bias", "attn.q_bias"),
        ("attn.v_proj.bias", "attn.v_bias"),
        ("attn.norm.", "attn.inner_attn_ln."),
        ("mlp.norm.", "mlp.ffn_ln."),
        ("mlp.fc1_g.", "mlp.w1."),
        ("mlp.fc1_x.", "mlp.w2."),
        ("mlp.fc2.", "mlp.w3."),
    ):
        k = k.replace(a, b)
    return k


def build_fvit_from_state_dict(
    sd: Mapping[str, Tensor],
    preset: str | FViTPreset | None = None,
    meta: Mapping[str, Any] | None = None,
    text_clip: nn.Module | None = None,
) -> FViTCheckpoint:
    """Build ovdense's detector from an F-ViT state dict and load every tensor (strictly).

    Args:
        sd: the flat official state dict (:func:`read_fvit_checkpoint`).
        preset: a name of :data:`FVIT_PRESETS` or an :class:`FViTPreset` (default: detected).
        meta: the checkpoint's ``meta`` (its ``CLASSES`` name the vocabulary when present).
        text_clip: an EVA02-CLIP with its text tower, to detect vocabularies by name.
    """
    from ..clip import load_clip

    check_fvit_state_dict(sd)
    p = detect_fvit_preset(sd, preset)
    clip = load_clip(p.clip_model)
    converted, class_embeds, background = convert_fvit_state_dict(sd, clip)
    classes = _vocabulary(p, meta, class_embeds.shape[0])
    learn_bg = "roi_head.bbox_head.bg_embedding" in sd
    num_convs = _count(sd, r"roi_head\.bbox_head\.shared_convs\.(\d+)\.")
    fc_dim = int(sd["roi_head.bbox_head.shared_fcs.0.weight"].shape[0])
    channels = int(sd["neck.fpn_convs.0.conv.weight"].shape[0])
    det = build_fvit(
        cast(nn.Module, clip.visual),
        train_classes=[f"class_{i}" for i in range(class_embeds.shape[0])],
        strategy="maskclip",
        out_indices=p.out_indices,
        pyramid_channels=channels,
        min_size=p.image_size,
        max_size=p.image_size,
        box_convs=num_convs,
        box_conv_dim=int(sd["roi_head.bbox_head.shared_convs.0.conv.weight"].shape[0])
        if num_convs
        else 256,
        box_fc_dim=fc_dim,
        rpn_pre_nms_top_n=(2000, 2000),
        rpn_post_nms_top_n=(1000, 1000),
        rpn_norm=p.rpn_norm,
        learn_background=learn_bg,
        clip_temperature=p.clip_temperature,
        alpha=p.alpha,
        beta=p.beta,
        score_thresh=p.score_thresh,
        nms_thresh=p.nms_thresh,
        detections_per_img=p.detections_per_img,
        mask_head=p.mask_head,
        mask_convs=_count(sd, r"roi_head\.mask_head\.convs\.(\d+)\."),
        mmdet_ops=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        train_class_embeds=class_embeds,
        background_embed=background,
    )
    if fc_dim != p.fc_dim and preset is not None:
        logger.info("F-ViT box head width %d (preset %s: %d).", fc_dim, p.name, p.fc_dim)
    converted["train_class_embeds"] = class_embeds
    if text_clip is not None:
        from ..text.encoder import TextEncoder

        det.text_encoder = TextEncoder(text_clip, progress=False).requires_grad_(False)
    own = {k for k in det.state_dict() if not k.startswith("text_encoder.")}
    missing = sorted(own - set(converted))
    unexpected = sorted(set(converted) - own)
    if missing or unexpected:
        raise CheckpointFormatError(
            f"Expected {_EXPECTED} of {p.name}, found tensors that do not fit it: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]})."
        )
    try:
        det.load_state_dict(converted, strict=False)
    except RuntimeError as e:
        raise CheckpointFormatError(
            f"Expected {_EXPECTED} of {p.name} ({p.size_name}), found tensors of other shapes: "
            f"{str(e).splitlines()[1:3]}."
        ) from e
    return FViTCheckpoint(det.eval(), p, classes, class_embeds)


def _vocabulary(p: FViTPreset, meta: Mapping[str, Any] | None, k: int) -> list[str] | None:
    names = None if meta is None else meta.get("CLASSES")
    if names is not None and len(names) == k:
        return [str(n) for n in names]
    if p.dataset == "coco_ov" and k == 65:
        return coco_ov_classes_coco_order()
    return None


def load_fvit(
    path: str | os.PathLike,
    preset: str | FViTPreset | None = None,
    text_clip: nn.Module | None = None,
) -> FViTCheckpoint:
    """Load one of F-ViT's released checkpoints (or a file :func:`export_fvit_state_dict`
    wrote) into ovdense: ``load_fvit("fvit_eva_vitb16_ovcoco_clipself_proposals.pth")``.

    See :func:`build_fvit_from_state_dict` for the arguments.

    Raises:
        CheckpointFormatError: not an F-ViT checkpoint, truncated, or another model size than
            ``preset`` (one sentence naming the expected format and what was found).
    """
    sd, meta = read_fvit_checkpoint(path)
    return build_fvit_from_state_dict(sd, preset, meta, text_clip)


def preset_with(preset: str | FViTPreset, **changes: Any) -> FViTPreset:
    """A copy of a preset with some fields changed (e.g. a tiny tower for tests)."""
    p = FVIT_PRESETS[preset] if isinstance(preset, str) else preset
    return dataclasses.replace(p, **changes)
