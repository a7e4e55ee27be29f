"""Open-vocabulary box classification in detectron2's ROI heads.

- :class:`TextFastRCNNOutputLayers`: detectron2's ``FastRCNNOutputLayers`` whose classifier is
  ovdense's :class:`~ovdense.modeling.detection.TextEmbeddingClassifier` (cosine with the
  vocabulary's text embeddings x a learnable temperature, a learned background embedding) and
  whose box regression is class-agnostic, so a class absent from the training labels is
  named at test time by swapping the vocabulary (:meth:`~TextFastRCNNOutputLayers.set_vocabulary`).
- :class:`OVDenseROIHeads`: ``StandardROIHeads`` that, at test time, pools the backbone's dense
  CLIP map over the proposals (1x1 RoIAlign) and hands it to the predictor for F-ViT's
  geometric ensemble (alpha for base classes and the background, beta for novel ones).

Layouts: ovdense puts the background in column 0, detectron2 in the last column; the predictor
returns detectron2's (``[N, K + 1]``, background last) and training labels are detectron2's
(``0..K-1`` index the training vocabulary, ``K`` = background).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads.fast_rcnn import (
    FastRCNNOutputLayers,
    _log_classification_stats,
    fast_rcnn_inference,
)
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn

from ...modeling.detection.classifier import (
    TextEmbeddingClassifier,
    class_embedding_matrix,
    clip_region_probs,
    geometric_ensemble,
)
from ...modeling.heads.region import box_features
from ...modeling.text.encoder import ClassEmbeddings, TextEncoder
from .backbone import load_clip_from_cfg

__all__ = ["OVDenseROIHeads", "TextFastRCNNOutputLayers", "encode_vocabulary"]


def encode_vocabulary(
    clip: nn.Module,
    names: Sequence[str | Sequence[str]],
    templates: str | Sequence[str] = "openai_imagenet",
) -> Tensor:
    """``[K, D]`` L2-normalised class embeddings of ``names`` (a class's synonyms as a list or
    ``"a|b"``, averaged) with the CLIP's text tower and prompt ``templates``.

    The LazyConfigs compute the predictor's vocabulary with it:
    ``class_embeds=L(encode_vocabulary)(clip=..., names=[...])``.
    """
    encoder = TextEncoder(clip, templates=templates, progress=False)
    return class_embedding_matrix(encoder(list(names))).detach().cpu()


def _bg_last(x: Tensor) -> Tensor:
    """ovdense's column order (background first) -> detectron2's (background last)."""
    return torch.cat([x[:, 1:], x[:, :1]], dim=1)


class TextFastRCNNOutputLayers(FastRCNNOutputLayers):
    """detectron2's box predictor with a text-embedding classifier and class-agnostic boxes.

    ``forward(x [N, C])`` -> ``(scores [N, K + 1], deltas [N, 4])``: ``scores[:, k] =
    temperature * cos(cls_fc(x), e_k)`` for the vocabulary's embeddings ``e_k``,
    ``scores[:, K] = temperature * cos(cls_fc(x), background)`` (F-ViT's head: ``cls_fc`` is a
    linear layer to the text space, ReLU after it with ``cls_relu``; the box branch an FC of
    ``reg_fc_dim`` + ReLU + linear, or one linear layer with ``reg_fc_dim=None``).

    Args:
        input_shape: the box head's output (``ShapeSpec(channels=C)``).
        box2box_transform: box coding (F-ViT: weights 10, 10, 5, 5).
        class_embeds: ``[K, D]`` embeddings of the *training* vocabulary (labels index it),
            e.g. :func:`encode_vocabulary`; or ClassEmbeddings.
        background_embed: ``[D]`` initial background embedding (e.g. the text embedding of
            ``"background"``); default a random unit vector.
        temperature, learn_temperature, learn_background: see
            :class:`~ovdense.modeling.detection.TextEmbeddingClassifier` (F-ViT: 50, learned).
        background_weight: weight of the background term of the cross-entropy, which is
            summed and divided by the number of sampled RoIs (F-ViT: 0.6 OV-COCO).
        cls_relu: ReLU on the class features before the cosine (F-ViT).
        reg_fc_dim: hidden FC of the box branch (F-ViT: the box head's width); ``None``: none.
        clip_temperature, alpha, beta: F-ViT's test-time ensemble with the frozen CLIP's RoI
            score (75, 0.1, 0.8 on OV-COCO), used when the ROI heads pass region features.
        test_score_thresh, test_nms_thresh, test_topk_per_image, smooth_l1_beta,
            box_reg_loss_type, loss_weight: detectron2's (F-ViT: 0.01 (0.05 in detectron2's
            defaults), NMS 0.4, 100, L1: beta 0).

    The vocabulary is not part of the checkpoint (non-persistent buffers): training uses
    ``class_embeds``; at test time :meth:`set_vocabulary` / :meth:`vocabulary` swap in any
    ``[K', D]`` embeddings (with ``is_base`` ``[K']`` for the ensemble).
    """

    train_class_embeds: Tensor
    class_embeds: Tensor
    is_base: Tensor

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec | int,
        *,
        box2box_transform: Box2BoxTransform,
        class_embeds: Tensor | ClassEmbeddings,
        background_embed: Tensor | None = None,
        temperature: float = 50.0,
        learn_temperature: bool = True,
        learn_background: bool = True,
        background_weight: float = 1.0,
        cls_relu: bool = True,
        reg_fc_dim: int | None = None,
        clip_temperature: float = 75.0,
        alpha: float = 0.1,
        beta: float = 0.8,
        test_score_thresh: float = 0.05,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
        smooth_l1_beta: float = 0.0,
        box_reg_loss_type: str = "smooth_l1",
        loss_weight: float | dict[str, float] = 1.0,
    ) -> None:
        embeds = class_embedding_matrix(class_embeds)
        super().__init__(
            input_shape,
            box2box_transform=box2box_transform,
            num_classes=int(embeds.shape[0]),
            test_score_thresh=test_score_thresh,
            test_nms_thresh=test_nms_thresh,
            test_topk_per_image=test_topk_per_image,
            cls_agnostic_bbox_reg=True,
            smooth_l1_beta=smooth_l1_beta,
            box_reg_loss_type=box_reg_loss_type,
            loss_weight=loss_weight,
        )
        if isinstance(input_shape, int):
            input_shape = ShapeSpec(channels=input_shape)
        in_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        d = int(embeds.shape[1])
        del self.cls_score  # the text classifier replaces detectron2's linear one
        self.cls_fc = nn.Linear(in_size, d)
        self.cls_relu = bool(cls_relu)
        self.classifier = TextEmbeddingClassifier(
            d,
            temperature=temperature,
            learn_temperature=learn_temperature,
            background_embed=background_embed,
            learn_background=learn_background,
        )
        box_dim = len(box2box_transform.weights)
        last = nn.Linear(reg_fc_dim or in_size, box_dim)
        self.bbox_pred: nn.Module = (
            nn.Sequential(nn.Linear(in_size, reg_fc_dim), nn.ReLU(), last) if reg_fc_dim else last
        )
        nn.init.normal_(last.weight, std=0.001)
        nn.init.constant_(last.bias, 0)
        self.background_weight = float(background_weight)
        self.clip_temperature = float(clip_temperature)
        self.alpha, self.beta = float(alpha), float(beta)
        self.register_buffer("train_class_embeds", embeds, persistent=False)
        self.register_buffer("class_embeds", embeds.clone(), persistent=False)
        self.register_buffer(
            "is_base", torch.ones(embeds.shape[0], dtype=torch.bool), persistent=False
        )

    @classmethod
    def from_config(cls, cfg: Any, input_shape: ShapeSpec) -> dict[str, Any]:
        """yacs: ``cfg.MODEL.OVDENSE`` (``TRAIN_CLASSES``, ``TEMPLATES``, ``TEMPERATURE``,
        ``BACKGROUND_WEIGHT``, ``CLIP_TEMPERATURE``, ``ALPHA``, ``BETA``...) and detectron2's
        ``ROI_BOX_HEAD`` / ``ROI_HEADS`` test settings. Loads the CLIP to embed the classes."""
        o = cfg.MODEL.OVDENSE
        if not o.TRAIN_CLASSES:
            raise ValueError("cfg.MODEL.OVDENSE.TRAIN_CLASSES (the training vocabulary) is empty.")
        clip = load_clip_from_cfg(cfg)
        embeds = encode_vocabulary(clip, list(o.TRAIN_CLASSES), o.TEMPLATES)
        background = encode_vocabulary(clip, ["background"], o.TEMPLATES)[0]
        return {
            "input_shape": input_shape,
            "box2box_transform": Box2BoxTransform(weights=cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS),
            "class_embeds": embeds,
            "background_embed": background,
            "temperature": o.TEMPERATURE,
            "learn_background": o.LEARN_BACKGROUND,
            "background_weight": o.BACKGROUND_WEIGHT,
            "reg_fc_dim": o.REG_FC_DIM or None,
            "clip_temperature": o.CLIP_TEMPERATURE,
            "alpha": o.ALPHA,
            "beta": o.BETA,
            "test_score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            "test_nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "smooth_l1_beta": cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA,
        }

    # -- the vocabulary ---------------------------------------------------------------------------
    def set_vocabulary(
        self,
        class_embeds: Tensor | ClassEmbeddings | None,
        is_base: Tensor | Sequence[bool] | None = None,
    ) -> None:
        """Detect these ``K'`` classes from now on (``None``: back to the training vocabulary,
        all base). ``is_base`` ``[K']``: which were trained on (ensemble weight ``alpha``,
        the others ``beta``); default: every class novel."""
        dev = self.train_class_embeds.device
        if class_embeds is None:
            self.class_embeds = self.train_class_embeds.clone()
            self.is_base = torch.ones(self.class_embeds.shape[0], dtype=torch.bool, device=dev)
            return
        emb = class_embedding_matrix(class_embeds).to(dev)
        if emb.shape[1] != self.classifier.embed_dim:
            raise ValueError(
                f"Class embeddings have {emb.shape[1]} dims, the classifier "
                f"{self.classifier.embed_dim}: embed them with this detector's CLIP."
            )
        base = (
            torch.zeros(emb.shape[0], dtype=torch.bool)
            if is_base is None
            else torch.as_tensor(is_base, dtype=torch.bool).reshape(-1)
        )
        if base.numel() != emb.shape[0]:
            raise ValueError(f"is_base has {base.numel()} entries for {emb.shape[0]} classes.")
        self.class_embeds, self.is_base = emb, base.to(dev)

    @contextmanager
    def vocabulary(
        self, class_embeds: Tensor | ClassEmbeddings, is_base: Tensor | Sequence[bool] | None = None
    ) -> Iterator[None]:
        """Detect these classes inside the ``with`` block, then restore the previous ones."""
        saved = self.class_embeds, self.is_base
        self.set_vocabulary(class_embeds, is_base)
        try:
            yield
        finally:
            self.class_embeds, self.is_base = saved

    # -- forward / losses / inference --------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` ``[N, C]`` box-head features -> ``(scores [N, K + 1] background last,
        deltas [N, 4])``; ``K``: the training vocabulary in training mode, else the current one."""
        x = x.flatten(1)
        feats = self.cls_fc(x)
        if self.cls_relu:
            feats = F.relu(feats)
        embeds = self.train_class_embeds if self.training else self.class_embeds
        scores = _bg_last(self.classifier(feats, embeds))
        return scores, self.bbox_pred(x)

    def losses(
        self, predictions: tuple[Tensor, Tensor], proposals: list[Instances]
    ) -> dict[str, Tensor]:
        """Cross-entropy with the background term weighted by ``background_weight``, summed and
        divided by the number of sampled RoIs (F-ViT / mmdet); detectron2's box loss."""
        scores, deltas = predictions
        gt_classes = (
            cat([p.gt_classes for p in proposals], dim=0)
            if len(proposals)
            else torch.empty(0, dtype=torch.long, device=scores.device)
        )
        k = scores.shape[1] - 1
        if gt_classes.numel() and int(gt_classes.max()) > k:
            raise ValueError(
                f"A training label is {int(gt_classes.max())}, but the training vocabulary has {k} "
                "classes: the dataset's thing_classes must be the predictor's class_embeds."
            )
        _log_classification_stats(scores, gt_classes)
        if len(proposals):
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat(
                [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals],
                dim=0,
            )
        else:
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=deltas.device)
        weight = scores.new_ones(scores.shape[1])
        weight[-1] = self.background_weight
        n = max(gt_classes.numel(), 1)
        loss_cls = F.cross_entropy(scores.float(), gt_classes, weight=weight, reduction="sum") / n
        losses = {
            "loss_cls": loss_cls,
            "loss_box_reg": self.box_reg_loss(proposal_boxes, gt_boxes, deltas, gt_classes),
        }
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    def ensemble_probs(self, probs: Tensor, region_feats: Tensor) -> Tensor:
        """F-ViT's ensemble of ``probs`` ``[N, K + 1]`` (background last) with the frozen
        CLIP's ``softmax(clip_temperature * cos(region, [background, classes]))`` of
        ``region_feats`` ``[N, D]``; returns ``[N, K + 1]``, background last."""
        weights = self.classifier.weights(self.class_embeds)  # [1 + K, D], background first
        clip = clip_region_probs(region_feats, weights, self.clip_temperature)
        det = torch.cat([probs[:, -1:], probs[:, :-1]], dim=1)
        return _bg_last(geometric_ensemble(det, clip, self.is_base, self.alpha, self.beta))

    def inference(
        self,
        predictions: tuple[Tensor, Tensor],
        proposals: list[Instances],
        region_feats: Tensor | None = None,
    ) -> tuple[list[Instances], list[Tensor]]:
        """detectron2's inference; with ``region_feats`` ``[N, D]`` (the dense CLIP map pooled
        over the proposals) the scores are F-ViT's ensemble. ``pred_classes`` index the current
        vocabulary."""
        boxes = self.predict_boxes(predictions, proposals)
        probs = self.predict_probs(predictions, proposals)
        if region_feats is not None:
            counts = [len(p) for p in proposals]
            probs = list(self.ensemble_probs(torch.cat(list(probs)), region_feats).split(counts))
        image_shapes = [x.image_size for x in proposals]
        return fast_rcnn_inference(
            list(boxes),
            list(probs),
            image_shapes,
            self.test_score_thresh,
            self.test_nms_thresh,
            self.test_topk_per_image,
        )


@ROI_HEADS_REGISTRY.register()
class OVDenseROIHeads(StandardROIHeads):
    """``StandardROIHeads`` with a :class:`TextFastRCNNOutputLayers` predictor and F-ViT's
    test-time ensemble.

    Args (beyond ``StandardROIHeads``'):
        clip_in_feature: the backbone output holding the dense CLIP map (``"clip_dense"``);
            ``None``: no ensemble (the detector's softmax alone).
        clip_stride: that map's stride (the CLIP's patch size).
        ensemble: use the ensemble at test time (when ``clip_in_feature`` is set).

    ``num_classes`` is the training vocabulary's size (detectron2 labels sampled background
    RoIs with it); at test time the predictor's vocabulary may have any size.
    """

    @configurable
    def __init__(
        self,
        *,
        clip_in_feature: str | None = "clip_dense",
        clip_stride: int = 16,
        ensemble: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(self.box_predictor, TextFastRCNNOutputLayers):
            raise TypeError(
                "OVDenseROIHeads needs a TextFastRCNNOutputLayers box_predictor, got "
                f"{type(self.box_predictor).__name__}."
            )
        self.clip_in_feature = clip_in_feature
        self.clip_stride = int(clip_stride)
        self.ensemble = bool(ensemble)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        ret = super().from_config(cfg, input_shape)
        name = cfg.MODEL.OVDENSE.DENSE_FEATURE or None
        ret["clip_in_feature"] = name
        if name is not None:
            ret["clip_stride"] = input_shape[name].stride
        ret["ensemble"] = cfg.MODEL.OVDENSE.ENSEMBLE
        return ret

    @classmethod
    def _init_box_head(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = TextFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        return ret

    def _forward_box(
        self, features: dict[str, Tensor], proposals: list[Instances]
    ) -> dict[str, Tensor] | list[Instances]:
        feats = [features[f] for f in self.box_in_features]
        boxes = [x.proposal_boxes for x in proposals]
        predictions = self.box_predictor(self.box_head(self.box_pooler(feats, boxes)))
        if self.training:
            losses = self.box_predictor.losses(predictions, proposals)
            if self.train_on_pred_boxes:  # detectron2's option, as StandardROIHeads has it
                with torch.no_grad():
                    pred = self.box_predictor.predict_boxes_for_gt_classes(predictions, proposals)
                for p, b in zip(proposals, pred):
                    p.proposal_boxes = Boxes(b)
            return losses
        region = None
        if self.ensemble and self.clip_in_feature is not None:
            dense = features[self.clip_in_feature]
            region = box_features(dense, [b.tensor for b in boxes], self.clip_stride, 1)
        instances, _ = self.box_predictor.inference(predictions, proposals, region)
        return instances
