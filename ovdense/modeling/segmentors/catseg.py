"""CAT-Seg (Cho et al., CVPR 2024) in ovdense: training the cost-aggregation head with CLIP's
partial fine-tuning, and the segmentor that runs it.

* :func:`finetune_clip` chooses what of an open_clip model trains (CAT-Seg: the query and value
  projections of every attention block of both towers).
* :class:`CATSegModel` is the training module of :class:`~ovdense.engine.Trainer`: dense CLIP
  (``catseg`` last block, intermediate blocks) -> :class:`~ovdense.modeling.heads.CATSegHead`
  with the training classes' per-template text embeddings (with gradients) -> binary
  cross-entropy against one-hot labels. Its checkpoints hold only what trains.
* :func:`build_catseg_segmentor` is a plain :class:`Segmentor` with the head in its ``head``
  slot (no subclass), optionally loading a trained checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...utils.weights import CheckpointFormatError
from ...vocabulary import Vocabulary
from ..backbones import dense_backbone_for
from ..clip import load_clip
from ..convert.catseg import (
    OFFICIAL_FORMAT,
    describe_official,
    from_official,
    is_official_catseg,
    read_catseg_file,
)
from ..heads.catseg import CATSegHead
from ..text import TextEncoder
from .base import DecodeOrder, Segmentor

__all__ = [
    "FINETUNE_MODES",
    "CATSegModel",
    "build_catseg_segmentor",
    "catseg_head_for",
    "default_guidance_layers",
    "finetune_clip",
    "load_catseg_checkpoint",
]

#: ``finetune`` values: ``"none"`` (CLIP frozen), ``"qv"`` (CAT-Seg's ``attention`` mode: the
#: query and value projection weights of every attention block of both towers), ``"full"``.
FINETUNE_MODES = ("none", "qv", "full")


def default_guidance_layers(num_blocks: int) -> tuple[int, int]:
    """CAT-Seg's decoder-guidance blocks: 3 and 7 of ViT-B's 12, 7 and 15 of ViT-L's 24, i.e.
    ``(n/3 - 1, 2n/3 - 1)`` (``(0, 1)`` for a 3-block test tower)."""
    return (max(0, num_blocks // 3 - 1), max(1, 2 * num_blocks // 3 - 1))


def _qv_hook(dim: int) -> Any:
    def hook(grad: Tensor) -> Tensor:
        grad = grad.clone()
        grad[dim : 2 * dim] = 0  # the key rows of the packed q/k/v projection stay frozen
        return grad

    return hook


def finetune_clip(clip: nn.Module, mode: str = "qv") -> list[str]:
    """Set which parameters of an open_clip model train; everything else is frozen.

    ``"qv"`` is CAT-Seg's partial fine-tuning: in every attention block of the image *and* text
    towers, the query and value projection weights (not the keys, biases or output projection).
    open_clip packs q, k and v in one ``in_proj_weight`` ``[3C, C]``: it is marked trainable
    and a gradient hook zeroes its key rows, so they never change under any optimizer without
    weight decay on them (:meth:`CATSegModel.param_groups` gives CLIP's group none). Towers
    with separate ``q_proj`` / ``v_proj`` layers (EVA) train those weights.

    Returns:
        The names of the trainable parameters.

    Raises:
        ValueError: an unknown mode, or ``"qv"`` on a model without attention projections.
    """
    if mode not in FINETUNE_MODES:
        raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {mode!r}.")
    clip.requires_grad_(mode == "full")
    if mode != "qv":
        return [n for n, p in clip.named_parameters() if p.requires_grad]
    found = False
    for module in clip.modules():
        if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            w = module.in_proj_weight
            w.requires_grad_(True)
            if not getattr(w, "_ovdense_qv_hook", False):
                w.register_hook(_qv_hook(module.embed_dim))
                w._ovdense_qv_hook = True  # type: ignore[attr-defined]
            found = True
        else:
            q, v = getattr(module, "q_proj", None), getattr(module, "v_proj", None)
            if isinstance(q, nn.Linear) and isinstance(v, nn.Linear):
                q.weight.requires_grad_(True)
                v.weight.requires_grad_(True)
                found = True
    if not found:
        raise ValueError(
            f"finetune='qv' found no attention projections in {type(clip).__name__}; use "
            "'none' or 'full'."
        )
    return [n for n, p in clip.named_parameters() if p.requires_grad]


def _vision_width(clip: nn.Module) -> int:
    visual: Any = getattr(clip, "visual", clip)
    width = getattr(getattr(visual, "transformer", None), "width", None)
    if width is None:
        trunk = getattr(visual, "trunk", None)
        width = getattr(trunk, "embed_dim", None)
    if width is None:
        raise ValueError(f"Cannot read the ViT width of {type(visual).__name__}.")
    return int(width)


def catseg_head_for(clip: nn.Module, num_templates: int = 1, **kwargs: Any) -> CATSegHead:
    """A :class:`CATSegHead` sized for ``clip``'s towers: ``embed_dim`` (joint space),
    ``intermediate_dim`` (ViT width) and :func:`default_guidance_layers`; ``kwargs`` override
    any argument (e.g. ``class_chunk``, ``pad_len``)."""
    backbone = dense_backbone_for(clip, "catseg")
    args: dict[str, Any] = {
        "embed_dim": backbone.embed_dim,
        "intermediate_dim": _vision_width(clip),
        "intermediate_layers": default_guidance_layers(backbone.num_blocks),
        "num_templates": num_templates,
    }
    args.update(kwargs)
    return CATSegHead(**args)


class CATSegModel(nn.Module):
    """CAT-Seg's training module (for :class:`~ovdense.engine.Trainer`): ``forward(batch) ->
    {"loss_sem_seg": BCE}``.

    ``batch["image"]`` ``[B, 3, H, W]`` RGB in ``[0, 1]`` (crops), ``batch["label"]``
    ``[B, H, W]`` int64 class indices into ``class_names`` or ``ignore_label``. Images are
    resized to ``image_size`` (384 for ViT-B/16, 336 for ViT-L/14: a 24 x 24 grid), run through
    dense CLIP (the ``catseg`` last block, with the head's intermediate blocks), the head sees
    every training class with its per-template text embeddings (recomputed each step: the text
    tower trains), its ``[B, N, 4h, 4w]`` logits are upsampled (bilinear) to the label size and
    compared with the one-hot labels by binary cross-entropy averaged over every pixel and
    class. As in the official code, ignored pixels stay in the average with an all-zero target.

    Args:
        clip: an open_clip model (shared with the backbone and text encoder, fine-tuned in
            place).
        class_names: the training classes, one per label value (a list, a
            :class:`~ovdense.vocabulary.Vocabulary`, or a class-name file); a class with
            synonyms is encoded by its first name, as in the official code.
        head: the head (default: :func:`catseg_head_for` with ``head_kwargs``).
        head_kwargs: arguments of the default head.
        templates: prompt templates (default CAT-Seg's one, ``"catseg"``).
        finetune: :data:`FINETUNE_MODES` (``"qv"``: CAT-Seg's).
        clip_lr: learning rate of CLIP's trainable weights (the official 0.01 x 2e-4); the
            head's group takes the optimizer's ``lr``.
        clip_weight_decay: CLIP group's weight decay (0: frozen key rows stay exact).
        image_size: CLIP input size (``None``: the crops as they come).
        ignore_label: the label value without a class.
    """

    def __init__(
        self,
        clip: nn.Module,
        class_names: Vocabulary | Sequence[str] | str | os.PathLike,
        head: CATSegHead | None = None,
        head_kwargs: dict[str, Any] | None = None,
        templates: str | Sequence[str] = "catseg",
        finetune: str = "qv",
        clip_lr: float = 2e-6,
        clip_weight_decay: float = 0.0,
        image_size: int | Sequence[int] | None = 384,
        ignore_label: int = 255,
    ) -> None:
        super().__init__()
        if isinstance(class_names, (str, os.PathLike)) and not isinstance(class_names, Vocabulary):
            vocab = Vocabulary.from_file(class_names)
        else:
            vocab = Vocabulary.coerce(class_names)
        self.class_names = [names[0] for names in vocab.classes]
        self.clip = clip
        self.text_encoder = TextEncoder(clip, templates=templates, progress=False)
        num_t = len(self.text_encoder.templates)
        self.head = (
            head if head is not None else catseg_head_for(clip, num_t, **(head_kwargs or {}))
        )
        if self.head.num_templates != num_t:
            raise ValueError(
                f"The head takes {self.head.num_templates} template(s), the templates are {num_t}."
            )
        self.backbone = dense_backbone_for(
            clip, "catseg", out_indices=self.head.intermediate_layers
        )
        self.trainable_clip = finetune_clip(clip, finetune)
        self.finetune = finetune
        self.clip_lr = float(clip_lr)
        self.clip_weight_decay = float(clip_weight_decay)
        if image_size is None:
            self.image_size: tuple[int, int] | None = None
        elif isinstance(image_size, int):
            self.image_size = (image_size, image_size)
        else:
            h, w = image_size
            self.image_size = (int(h), int(w))
        self.ignore_label = int(ignore_label)

    # -- parameters and checkpoints ---------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """The head at the optimizer's ``lr``; CLIP's trainable weights at ``clip_lr`` and
        ``clip_weight_decay`` (read by :class:`~ovdense.engine.Trainer`)."""
        clip_params = [p for p in self.clip.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": list(self.head.parameters())}]
        if clip_params:
            groups.append(
                {"params": clip_params, "lr": self.clip_lr, "weight_decay": self.clip_weight_decay}
            )
        return groups

    def state_dict(  # type: ignore[override]
        self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False
    ) -> dict[str, Any]:
        """What trains: ``head.*`` and CLIP's trainable tensors as ``clip.<name>``."""
        out: dict[str, Any] = {}
        for k, v in self.head.state_dict(keep_vars=keep_vars).items():
            out[f"{prefix}head.{k}"] = v
        params = dict(self.clip.named_parameters())
        for name in self.trainable_clip:
            p = params[name]
            out[f"{prefix}clip.{name}"] = p if keep_vars else p.detach()
        return out

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load :meth:`state_dict` (``head.*`` and ``clip.*`` keys)."""
        return load_catseg_checkpoint(dict(state_dict), self.clip, self.head, strict=strict)

    def train(self, mode: bool = True) -> CATSegModel:
        super().train(mode)
        if self.finetune == "none":
            self.clip.eval()  # frozen: no dropout
        return self

    # -- forward ----------------------------------------------------------------------------
    def text_embeddings(self) -> Tensor:
        """``[N, P, D]`` per-template embeddings of the training classes (with gradients when
        the text tower trains)."""
        text_trains = any(
            p.requires_grad for n, p in self.clip.named_parameters() if not n.startswith("visual.")
        )
        if text_trains and torch.is_grad_enabled():
            return self.text_encoder.encode_names_trainable(self.class_names)
        with torch.no_grad():
            return self.text_encoder.encode_names_trainable(self.class_names)

    def logits(self, images: Tensor) -> Tensor:
        """``[B, N, 4h, 4w]`` logits of every training class for ``[B, 3, H, W]`` images in
        ``[0, 1]``."""
        x = images.float()
        if self.image_size is not None and tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        feats = self.backbone(self.backbone.normalize(x))
        inter = [feats.intermediates[f"block{i}"] for i in self.head.intermediate_layers]
        dense = feats.unnormalized() if self.head.raw_features else feats.dense
        return self.head(dense, self.text_embeddings(), inter or None)

    def losses(self, logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Binary cross-entropy of ``logits`` ``[B, N, h, w]`` (upsampled to the labels) against
        one-hot ``labels`` ``[B, H, W]`` (ignored pixels: all-zero targets, kept in the mean)."""
        labels = labels.long()
        n = logits.shape[1]
        logits = F.interpolate(
            logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False
        )
        valid = labels != self.ignore_label
        bad = valid & ((labels < 0) | (labels >= n))
        if bad.any():
            raise ValueError(
                f"Labels hold values outside 0..{n - 1} that are not the ignore label "
                f"{self.ignore_label}: {sorted(set(labels[bad].unique().tolist()))[:5]}."
            )
        target = F.one_hot(torch.where(valid, labels, 0), n).permute(0, 3, 1, 2).to(logits.dtype)
        target = target * valid[:, None].to(logits.dtype)
        return {"loss_sem_seg": F.binary_cross_entropy_with_logits(logits, target)}

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        return self.losses(self.logits(batch["image"]), batch["label"])

    # -- inference --------------------------------------------------------------------------
    def segmentor(self, **kwargs: Any) -> Segmentor:
        """A :class:`Segmentor` sharing this model's CLIP and head (e.g. for evaluation during
        training); ``kwargs`` go to :func:`build_catseg_segmentor`."""
        refresh_text_id(self.clip, self.trainable_clip)
        kwargs.setdefault("templates", self.text_encoder.templates)
        return build_catseg_segmentor(self.clip, head=self.head, **kwargs)

    def extra_repr(self) -> str:
        return f"classes={len(self.class_names)}, finetune={self.finetune!r}"


def refresh_text_id(clip: nn.Module, names: Sequence[str]) -> None:
    """Give ``clip`` an ``ovdense_id`` that covers its fine-tuned tensors ``names``, so that
    text embeddings cached for the pretrained weights are never served for fine-tuned ones."""
    if not names:
        return
    base = getattr(clip, "_ovdense_base_id", None)
    if base is None:
        base = getattr(clip, "ovdense_id", None) or "unnamed"
        clip._ovdense_base_id = base  # type: ignore[assignment]
    params = dict(clip.named_parameters())
    h = hashlib.sha1()
    for name in sorted(names):
        h.update(name.encode())
        h.update(params[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    clip.ovdense_id = f"{base}+tuned:{h.hexdigest()}"  # type: ignore[assignment]


def _read_state(checkpoint: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A flat state dict from a path or a (possibly ``{"model": ...}``-nested) mapping."""
    if not isinstance(checkpoint, Mapping):
        return read_catseg_file(checkpoint)
    state: Mapping[str, Any] = checkpoint
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    return dict(state)


def _source(checkpoint: object) -> str:
    if checkpoint is None or isinstance(checkpoint, Mapping):
        return "The checkpoint"
    return f"CAT-Seg checkpoint {checkpoint}"


def _clip_size(clip: nn.Module) -> str:
    visual: Any = getattr(clip, "visual", clip)
    conv = getattr(visual, "conv1", None)
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if conv is None or blocks is None:
        return type(visual).__name__
    return f"width {conv.out_channels}, patch {conv.kernel_size[0]}, {len(blocks)} blocks"


def load_catseg_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, Any],
    clip: nn.Module,
    head: nn.Module,
    strict: bool = True,
    source: str | None = None,
) -> Any:
    """Load a CAT-Seg checkpoint into ``clip`` and ``head``, then refresh ``clip``'s text-cache
    id. Two formats are recognised by their keys:

    * ovdense's (a trainer checkpoint ``{"model": ...}`` or :meth:`CATSegModel.state_dict`):
      ``head.*`` and the ``clip.*`` tensors that were trained;
    * the official one (KU-CVLAB/CAT-Seg's released ``model_final.pth``, detectron2):
      converted by :func:`~ovdense.modeling.convert.catseg.from_official`; it holds the whole
      fine-tuned CLIP, so every CLIP tensor is replaced (``clip`` only gives the architecture:
      open_clip ``ViT-B-16`` or ``ViT-L-14-336`` with QuickGELU).

    ``source`` names the checkpoint in messages (default: its path, or "The checkpoint").

    Raises:
        CheckpointFormatError: a file that is neither (another method's, truncated), an
            official model of another CLIP size than ``clip``, keys that are neither
            ``head.*`` nor ``clip.*``, CLIP or head tensors of another shape (all checked
            before anything is loaded); the message names the expected format and what was
            found.
    """
    state = _read_state(checkpoint)
    source = source or _source(checkpoint)
    official = is_official_catseg(state)
    if official:
        info = describe_official(state, source)
        params = dict(clip.named_parameters())
        conv = params.get("visual.conv1.weight")
        if conv is None or (int(conv.shape[0]), int(conv.shape[-1])) != (
            info.vision_width,
            info.patch_size,
        ):
            raise CheckpointFormatError(
                f"{source} is CAT-Seg's {info.official_name} model (CLIP width "
                f"{info.vision_width}, patch {info.patch_size}), but the CLIP here has "
                f"{_clip_size(clip)}; use the preset of that size (seg/catseg_vitb16 or "
                "seg/catseg_vitl14)."
            )
        state = from_official(state, source)
    head_sd = {k[5:]: v for k, v in state.items() if k.startswith("head.")}
    clip_sd = {k[5:]: v for k, v in state.items() if k.startswith("clip.")}
    extra = [k for k in state if not k.startswith(("head.", "clip."))]
    if extra or not head_sd:
        found = f"unexpected keys {extra[:5]}" if extra else "no head.* tensors"
        raise CheckpointFormatError(
            f"{source} is not a CAT-Seg checkpoint: expected {OFFICIAL_FORMAT} or ovdense's "
            f"(head.* and clip.* tensors, what CATSegModel saves), found {found}."
        )
    params = dict(clip.named_parameters())
    bad = [k for k in clip_sd if k not in params or params[k].shape != clip_sd[k].shape]
    if bad:
        raise CheckpointFormatError(
            f"CLIP tensors of {source} do not fit this CLIP ({_clip_size(clip)}): {bad[:5]}."
        )
    if official:
        missing = sorted(set(params) - set(clip_sd))
        if missing:
            raise CheckpointFormatError(
                f"{source} lacks CLIP tensors {missing[:5]} of this open_clip model; expected "
                f"{OFFICIAL_FORMAT} with the whole CLIP."
            )
    own = head.state_dict()
    bad = [
        f"{k} {tuple(head_sd[k].shape)} (head: {tuple(own[k].shape)})"
        for k in head_sd
        if k in own and own[k].shape != head_sd[k].shape
    ]
    if bad:
        raise CheckpointFormatError(
            f"Head tensors of {source} do not fit this head: {bad[:3]} (another CLIP size, "
            "template count or head_kwargs than in training?)."
        )
    with torch.no_grad():
        for k, v in clip_sd.items():
            params[k].copy_(v.to(params[k].dtype))
    head_sd = {k: v.to(own[k].dtype) if k in own else v for k, v in head_sd.items()}
    result = head.load_state_dict(head_sd, strict=strict)
    refresh_text_id(clip, list(clip_sd))
    return result


def build_catseg_segmentor(
    clip: nn.Module | None = None,
    checkpoint: str | os.PathLike | Mapping[str, Any] | None = None,
    head: CATSegHead | None = None,
    head_kwargs: dict[str, Any] | None = None,
    templates: str | Sequence[str] = "catseg",
    short_side: int | None = 640,
    max_long_side: int | None = 2560,
    window: int | None = 384,
    stride: int | None = 256,
    window_batch_size: int = 4,
    prob_thd: float = 0.0,
    background_index: int | None = None,
    precision: str = "fp32",
    text_cache_dir: str | os.PathLike | None = None,
    post_refiner: nn.Module | None = None,
    *,
    clip_model: str = "ViT-B-16",
    clip_pretrained: str | None = "openai",
    fixed_size: int | Sequence[int] | None = None,
    global_view: bool = False,
    crop_resize: int | None = None,
    decode_order: DecodeOrder = "ovdense",
) -> Segmentor:
    """CAT-Seg as a plain :class:`Segmentor`: dense CLIP with the ``catseg`` last block,
    :class:`~ovdense.modeling.heads.CATSegHead` in the ``head`` slot, ``logit_scale=1``.

    The presets (``seg/catseg_vitb16``, ``seg/catseg_vitl14``) set the official evaluation
    (``eval.sh``, ``CATSeg.inference_sliding_window``): the image resized to 640 x 640
    (``fixed_size``), four 384-pixel windows 256 apart plus the whole image at 384
    (``global_view``), each entering CLIP at 384 (ViT-B/16) or 336 (ViT-L/14, ``crop_resize``),
    sigmoid probabilities averaged over the windows and 1:1 with the whole image
    (``decode_order="sigmoid"``). The defaults here are ovdense's older geometry (short side
    640, aspect ratio kept, no global view, window logits averaged); see
    ``docs/methods.md#cat-seg``.

    Args:
        clip: an open_clip model, or ``None``: built here from ``clip_model``. With an
            official checkpoint (which holds the whole fine-tuned CLIP) it is built without
            weights (nothing is downloaded) and must be the checkpoint's size; otherwise with
            ``clip_pretrained``'s weights (``"openai"``, downloaded by open_clip).
        checkpoint: a trained checkpoint, ovdense's or the official ``model_final.pth``
            (:func:`load_catseg_checkpoint`), or ``None`` (a random head).
        head: the head module (default: :func:`catseg_head_for` with ``head_kwargs``).
        templates: the templates the head was trained with.
        post_refiner: an optional refiner of the final probabilities (e.g. SAM's,
            :class:`~ovdense.sam.refine.SAMRefiner`).
        others: see :class:`Segmentor`.

    Raises:
        CheckpointFormatError: see :func:`load_catseg_checkpoint`.
    """
    state = None if checkpoint is None else _read_state(checkpoint)
    source = _source(checkpoint)
    if clip is None:
        if state is not None and is_official_catseg(state):
            info = describe_official(state, source)
            if info.clip_model != clip_model:
                if info.clip_model is None:
                    hint = "pass a CLIP of that size as clip"
                elif info.clip_model.startswith("ViT-L"):
                    hint = "use seg/catseg_vitl14"
                else:
                    hint = "use seg/catseg_vitb16"
                raise CheckpointFormatError(
                    f"{source} is CAT-Seg's {info.official_name} model, but this preset builds "
                    f"{clip_model}; {hint}."
                )
            # every CLIP tensor comes from the checkpoint: the architecture only
            clip = load_clip(clip_model, quick_gelu=True)
        else:
            clip = load_clip(clip_model, pretrained=clip_pretrained)
    text_encoder = TextEncoder(clip, templates=templates, cache_dir=text_cache_dir)
    if head is None:
        head = catseg_head_for(clip, len(text_encoder.templates), **(head_kwargs or {}))
    if state is not None:
        load_catseg_checkpoint(state, clip, head, source=source)
        text_encoder = TextEncoder(clip, templates=templates, cache_dir=text_cache_dir)
    return Segmentor(
        backbone=dense_backbone_for(clip, "catseg", out_indices=head.intermediate_layers),
        text_encoder=text_encoder,
        head=head,
        short_side=short_side,
        max_long_side=max_long_side,
        fixed_size=fixed_size,
        window=window,
        stride=stride,
        global_view=global_view,
        crop_resize=crop_resize,
        window_batch_size=window_batch_size,
        logit_scale=1.0,
        prob_thd=prob_thd,
        background_index=background_index,
        precision=precision,
        post_refiner=post_refiner,
        decode_order=decode_order,
    )
