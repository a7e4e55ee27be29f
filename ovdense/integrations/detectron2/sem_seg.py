"""ovdense's open-vocabulary segmentation heads as a detectron2 semantic-segmentation head.

:class:`OVDenseSemSegHead` (in ``SEM_SEG_HEADS_REGISTRY``) mounts any head of ovdense's
:data:`~ovdense.modeling.heads.SEG_HEADS` registry (``"cosine"``, ``"catseg"``, ...) in
detectron2's ``SemanticSegmentor``: the backbone's dense CLIP map ``[B, D, h, w]`` and the
vocabulary's embeddings ``[K, D]`` give ``[B, K, h', w']`` scores, times ``logit_scale``,
upsampled to the padded input (``[B, K, H, W]`` logits, as detectron2's heads return them).
Training: cross-entropy with ``ignore_value``; the vocabulary is swapped like the box
predictor's (:meth:`OVDenseSemSegHead.set_vocabulary`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from ...modeling.detection.classifier import class_embedding_matrix
from ...modeling.heads import build_seg_head
from ...modeling.text.encoder import ClassEmbeddings
from .backbone import load_clip_from_cfg
from .roi_heads import encode_vocabulary

__all__ = ["OVDenseSemSegHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class OVDenseSemSegHead(nn.Module):
    """An ovdense segmentation head over the dense CLIP map (detectron2 ``sem_seg_head``).

    Args:
        input_shape: the backbone's ``output_shape()``.
        class_embeds: ``[K, D]`` vocabulary embeddings (e.g.
            :func:`~ovdense.integrations.detectron2.encode_vocabulary`) or ClassEmbeddings.
        head: a name in ovdense's ``SEG_HEADS`` (with ``head_kwargs``) or a module with the
            contract ``head(dense [B, D, h, w], embeds [K, D]) -> [B, K, h', w']``.
        in_feature: the backbone output holding the dense map (``"clip_dense"``).
        logit_scale: multiplier of the head's scores before the softmax (cosine head: CLIP's
            100, or a trained temperature); ``learn_logit_scale`` makes it a parameter.
        ignore_value: ground-truth label not scored (255).
        loss_weight: weight of ``loss_sem_seg``.

    Heads that need per-template embeddings or block intermediates (CAT-Seg) are not mounted
    here: their guidance needs the segmentor's own windowing (use ovdense's segmentors).
    """

    class_embeds: Tensor

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        class_embeds: Tensor | ClassEmbeddings,
        head: str | nn.Module = "cosine",
        head_kwargs: dict[str, Any] | None = None,
        in_feature: str = "clip_dense",
        logit_scale: float = 100.0,
        learn_logit_scale: bool = False,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if in_feature not in input_shape:
            raise KeyError(
                f"The backbone has no output {in_feature!r} (it has {sorted(input_shape)})."
            )
        self.head = build_seg_head(head, **(head_kwargs or {}))
        if getattr(self.head, "per_template", False) or getattr(
            self.head, "intermediate_layers", ()
        ):
            raise ValueError(
                f"Head {head!r} needs per-template embeddings or block intermediates; mount it "
                "in an ovdense segmentor instead."
            )
        self.in_feature = in_feature
        self.stride = int(input_shape[in_feature].stride)
        embeds = class_embedding_matrix(class_embeds)
        if embeds.shape[1] != input_shape[in_feature].channels:
            raise ValueError(
                f"Class embeddings have {embeds.shape[1]} dims, the dense map "
                f"{input_shape[in_feature].channels}."
            )
        self.register_buffer("class_embeds", embeds, persistent=False)
        scale = torch.tensor(float(logit_scale))
        if learn_logit_scale:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale, persistent=False)
        self.ignore_value = int(ignore_value)
        self.loss_weight = float(loss_weight)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """yacs: ``cfg.MODEL.OVDENSE`` (``TRAIN_CLASSES``, ``TEMPLATES``, ``SEG_HEAD``,
        ``DENSE_FEATURE``, ``LOGIT_SCALE``) and ``MODEL.SEM_SEG_HEAD`` (``IGNORE_VALUE``,
        ``LOSS_WEIGHT``)."""
        o = cfg.MODEL.OVDENSE
        if not o.TRAIN_CLASSES:
            raise ValueError("cfg.MODEL.OVDENSE.TRAIN_CLASSES (the vocabulary) is empty.")
        clip = load_clip_from_cfg(cfg)
        return {
            "input_shape": input_shape,
            "class_embeds": encode_vocabulary(clip, list(o.TRAIN_CLASSES), o.TEMPLATES),
            "head": o.SEG_HEAD,
            "in_feature": o.DENSE_FEATURE,
            "logit_scale": o.LOGIT_SCALE,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
        }

    def set_vocabulary(self, class_embeds: Tensor | ClassEmbeddings) -> None:
        """Segment these ``K'`` classes from now on (``[K', D]`` or ClassEmbeddings)."""
        emb = class_embedding_matrix(class_embeds).to(self.class_embeds.device)
        if emb.shape[1] != self.class_embeds.shape[1]:
            raise ValueError(
                f"Class embeddings have {emb.shape[1]} dims, the head {self.class_embeds.shape[1]}."
            )
        self.class_embeds = emb

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        """``[B, K, H, W]`` logits at the padded input's resolution."""
        dense = features[self.in_feature]
        scores = self.head(dense, self.class_embeds.to(dense)) * self.logit_scale
        size = (dense.shape[-2] * self.stride, dense.shape[-1] * self.stride)
        return F.interpolate(scores.float(), size=size, mode="bilinear", align_corners=False)

    def forward(
        self, features: dict[str, Tensor], targets: Tensor | None = None
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """detectron2's contract: training ``(None, {"loss_sem_seg"})`` with ``targets``
        ``[B, H, W]``; inference ``([B, K, H, W] logits, {})``."""
        logits = self.layers(features)
        if not self.training:
            return logits, {}
        if targets is None:
            raise ValueError("targets ([B, H, W] labels) are needed in training mode.")
        loss = F.cross_entropy(logits, targets.long(), ignore_index=self.ignore_value)
        return None, {"loss_sem_seg": loss * self.loss_weight}
