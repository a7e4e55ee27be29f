"""F-ViT-style open-vocabulary detector: frozen dense CLIP ViT -> pyramid -> Faster R-CNN whose
classifier is the vocabulary's text embeddings, ensembled at test time with the frozen CLIP's
own RoI score.

Read from the CLIPSelf repository (``F-ViT/models/{fvit,fvit_head,evaclip_vit}.py``, OV-COCO
configs) and re-implemented on torchvision's detection components:

- the CLIP image tower is frozen (no gradient, always in eval mode); four blocks are tapped
  (ViT-B/16: 3, 5, 7, 11), the last one *through the dense last block* (F-ViT runs it without
  attention, i.e. the ``maskclip`` strategy), and feed :class:`SimpleFeaturePyramid`;
- the RPN and the RoI sampling are torchvision's (F-ViT's OV-COCO settings: anchors ``8 x
  stride`` with ratios 0.5/1/2 on strides 4..64, 256 anchors per image at 0.7/0.3 IoU, 512
  RoIs per image with 25 % positives at 0.5 IoU, 1000 proposals, test NMS 0.4, score 0.01,
  100 detections);
- the RoI box head (4 convs + 2 FCs shared, one FC per branch, ReLU after each, also on the
  class branch as F-ViT does) regresses class-agnostic deltas (L1, target stds
  0.1/0.1/0.2/0.2) and classifies by cosine with the text embeddings times a learned
  temperature (cross-entropy whose background term weighs 0.6 (OV-COCO); novel classes never
  enter training: the training vocabulary is the base classes);
- at test time the detector's softmax is combined with the softmax of ``75 x cosine`` between
  the 1x1 RoIAlign of the dense CLIP map (stride = patch) and the same embeddings:
  :func:`~ovdense.modeling.detection.classifier.geometric_ensemble` with alpha = 0.1 for base
  classes and the background, beta = 0.8 for the novel ones.

Differences from F-ViT: torchvision's RPN losses (binary cross-entropy + smooth L1) instead of
mmdet's L1. By default the anchors, RoI pooling and resizing are torchvision's; with
``mmdet_ops=True`` (what :mod:`ovdense.modeling.convert.fvit` builds for F-ViT's released
checkpoints) they are mmdet 2.x's: unrounded anchors on possibly fractional strides
(:class:`MMDetAnchorGenerator`), half-pixel-aligned RoIAlign with mmdet's level rule
(:class:`LevelRoIAlign`), no small-box filter after the box head, images padded to a square.
The optional mask head (:class:`FViTMaskHead`, F-ViT's OV-LVIS Mask R-CNN configs) is mmdet's
class-agnostic ``FCNMaskHead``.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import (
    MultiScaleRoIAlign,
    batched_nms,
    clip_boxes_to_image,
    remove_small_boxes,
    roi_align,
)
from torchvision.ops.misc import Conv2dNormActivation

from ..backbones.tower import DenseTowerBackbone
from ..heads.region import box_features
from ..text.encoder import ClassEmbeddings, TextEncoder
from .classifier import (
    TextEmbeddingClassifier,
    class_embedding_matrix,
    clip_region_probs,
    geometric_ensemble,
)
from .pyramid import SimpleFeaturePyramid

__all__ = [
    "FViTBoxHead",
    "FViTDetector",
    "FViTMaskHead",
    "FViTTransform",
    "LevelRoIAlign",
    "MMDetAnchorGenerator",
    "MMDetBoxCoder",
    "OVRoIHeads",
    "build_fvit",
    "default_taps",
    "paste_masks_mmdet",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

logger = logging.getLogger(__name__)


class FViTBoxHead(nn.Module):
    """RoI features ``[N, C, s, s]`` -> class features ``[N, D]`` and class-agnostic deltas
    ``[N, 4]`` (F-ViT's ``FViTBBoxHead`` trunk: shared convs + FCs, one FC per branch).

    Args:
        in_channels: pyramid channels ``C``.
        roi_size: RoIAlign output side ``s``.
        embed_dim: text-embedding dimension ``D`` (the class branch's output).
        conv_dim, num_convs: shared 3x3 convolutions (F-ViT: 4 of 256, batch-normed).
        fc_dim, num_fcs: shared FCs (F-ViT: 2 of 512).
        cls_relu: ReLU on the class features before the cosine (F-ViT does; its code marks it
            "FIXME").
    """

    def __init__(
        self,
        in_channels: int,
        roi_size: int,
        embed_dim: int,
        conv_dim: int = 256,
        num_convs: int = 4,
        fc_dim: int = 512,
        num_fcs: int = 2,
        cls_relu: bool = True,
    ) -> None:
        super().__init__()
        self.shared = FastRCNNConvFCHead(
            (in_channels, roi_size, roi_size),
            [conv_dim] * num_convs,
            [fc_dim] * num_fcs,
            norm_layer=nn.BatchNorm2d,
        )
        self.cls_fc = nn.Linear(fc_dim, embed_dim)
        self.reg_fc = nn.Linear(fc_dim, fc_dim)
        self.bbox_pred = nn.Linear(fc_dim, 4)
        self.cls_relu = cls_relu

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.shared(x)
        cls = self.cls_fc(x)
        if self.cls_relu:
            cls = F.relu(cls)
        return cls, self.bbox_pred(F.relu(self.reg_fc(x)))


class FViTMaskHead(nn.Module):
    """Class-agnostic mask head, mmdet's ``FCNMaskHead`` as F-ViT's OV-LVIS configs set it:
    ``num_convs`` 3x3 convolutions (batch-normed, ReLU), a 2x transposed convolution + ReLU and
    a 1x1 convolution to one mask logit.

    ``forward(x [N, C, s, s]) -> [N, 1, 2s, 2s]`` logits (F-ViT: ``s = 14``, 28x28 masks).
    """

    def __init__(self, in_channels: int, conv_dim: int = 256, num_convs: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(num_convs):
            layers.append(Conv2dNormActivation(c, conv_dim, 3, norm_layer=nn.BatchNorm2d))
            c = conv_dim
        self.convs = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(c, c, 2, stride=2)
        self.logits = nn.Conv2d(c, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(F.relu(self.upsample(self.convs(x))))


class MMDetAnchorGenerator(AnchorGenerator):
    """Anchors as mmdet 2.x's ``AnchorGenerator`` makes them (F-ViT's RPN): per level one base
    size ``scale x stride`` at each aspect ratio ``h / w``, centred on ``(0, 0)`` and *not*
    rounded (torchvision rounds), shifted by ``stride`` per cell; strides may be fractional
    (ViT-L/14: 3.5, 7, 14, 28, 56), they are not inferred from the map sizes.

    Same contract as torchvision's ``AnchorGenerator``: ``forward(image_list, feature_maps)``
    -> one ``[sum_l(h_l w_l A), 4]`` tensor per image, cell-major then anchor (ratio) order.
    """

    def __init__(
        self,
        strides: Sequence[float],
        scale: float = 8.0,
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
    ) -> None:
        super().__init__(
            tuple((scale * s,) for s in strides), (tuple(float(r) for r in ratios),) * len(strides)
        )
        self.level_strides = [float(s) for s in strides]
        r = torch.as_tensor(list(ratios), dtype=torch.float32)
        h, w = r.sqrt(), 1.0 / r.sqrt()
        self.cell_anchors = [
            torch.stack([-w * scale * s, -h * scale * s, w * scale * s, h * scale * s], 1) / 2
            for s in self.level_strides
        ]

    def grid_anchors(
        self, grid_sizes: list[list[int]], strides: list[list[Tensor]]
    ) -> list[Tensor]:
        if len(grid_sizes) != len(self.level_strides):
            raise ValueError(
                f"{len(grid_sizes)} feature maps, but anchors were set up for "
                f"{len(self.level_strides)} strides ({self.level_strides})."
            )
        device = self.cell_anchors[0].device
        own = [[torch.tensor(s, device=device)] * 2 for s in self.level_strides]
        return super().grid_anchors(grid_sizes, own)


class MMDetBoxCoder(BoxCoder):
    """Box deltas decoded as mmdet 2.x's ``DeltaXYWHBBoxCoder`` decodes them (F-ViT's RPN and
    box head): the log-size deltas are clamped to ``[-log(1000/16), log(1000/16)]`` on *both*
    sides (torchvision clamps only from above, so a delta under ``-4.135`` shrinks a box further
    than mmdet lets it), centres and sizes computed in mmdet's order.

    Same contract as torchvision's ``BoxCoder`` (``weights`` = the inverse of mmdet's
    ``target_stds``); :meth:`encode` is torchvision's (the same targets as mmdet's).
    """

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """``rel_codes`` ``[N, 4 K]`` deltas, ``boxes`` ``[N, 4]`` XYXY -> ``[N, 4 K]`` XYXY."""
        boxes = boxes.to(rel_codes.dtype)
        n = rel_codes.shape[0]
        stds = rel_codes.new_tensor([1.0 / w for w in self.weights])
        deltas = rel_codes.reshape(n, -1, 4) * stds
        centre = ((boxes[:, :2] + boxes[:, 2:]) * 0.5)[:, None]
        size = (boxes[:, 2:] - boxes[:, :2])[:, None]
        clip = self.bbox_xform_clip
        out_centre = centre + size * deltas[..., :2]
        out_size = size * deltas[..., 2:].clamp(min=-clip, max=clip).exp()
        return torch.cat([out_centre - out_size * 0.5, out_centre + out_size * 0.5], -1).reshape(
            n, -1
        )


class LevelRoIAlign(nn.Module):
    """RoIAlign over pyramid levels as mmdet's ``SingleRoIExtractor`` does it (F-ViT).

    A box of side ``sqrt(w h)`` goes to level ``floor(log2(side / finest_scale + 1e-6))``
    (clamped to the levels given), pooled with the half-pixel-aligned RoIAlign
    (``aligned=True``, mmcv's default; torchvision's ``MultiScaleRoIAlign`` is not aligned)
    at that level's ``1 / stride``.

    Args:
        featmap_names: the pyramid levels used, finest first.
        output_size: RoIAlign output side.
        strides: the levels' strides in input pixels (may be fractional).
        sampling_ratio: RoIAlign's samples per bin (0: adaptive).
        finest_scale: mmdet's ``finest_scale`` (56).

    ``forward(features, boxes [M_i, 4] per image, image_shapes) -> [sum M_i, C, s, s]``, the
    same call as torchvision's ``MultiScaleRoIAlign``.
    """

    def __init__(
        self,
        featmap_names: Sequence[str],
        output_size: int,
        strides: Sequence[float],
        sampling_ratio: int = 0,
        finest_scale: float = 56.0,
    ) -> None:
        super().__init__()
        if len(featmap_names) != len(strides):
            raise ValueError(
                f"{len(featmap_names)} levels ({list(featmap_names)}) but {len(strides)} strides."
            )
        self.featmap_names = list(featmap_names)
        self.output_size = int(output_size)
        self.strides = [float(s) for s in strides]
        self.sampling_ratio = int(sampling_ratio)
        self.finest_scale = float(finest_scale)

    def levels(self, rois: Tensor) -> Tensor:
        """``[N]`` level index of ``[N, 5]`` RoIs (batch index, XYXY)."""
        side = ((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).sqrt()
        lvl = torch.floor(torch.log2(side / self.finest_scale + 1e-6))
        return lvl.clamp(min=0, max=len(self.strides) - 1).long()

    def forward(
        self,
        features: Mapping[str, Tensor],
        boxes: list[Tensor],
        image_shapes: list[tuple[int, int]] | None = None,
    ) -> Tensor:
        feats = [features[n] for n in self.featmap_names]
        rois = torch.cat(
            [torch.cat([b.new_full((b.shape[0], 1), i), b], 1) for i, b in enumerate(boxes)]
        )
        s = self.output_size
        out = feats[0].new_zeros(rois.shape[0], feats[0].shape[1], s, s)
        if rois.shape[0] == 0:
            return out
        if len(feats) == 1:
            lvl = torch.zeros(rois.shape[0], dtype=torch.long, device=rois.device)
        else:
            lvl = self.levels(rois)
        for i, (f, stride) in enumerate(zip(feats, self.strides, strict=True)):
            idx = torch.nonzero(lvl == i).squeeze(1)
            if idx.numel():
                out[idx] = roi_align(
                    f, rois[idx].to(f.dtype), s, 1.0 / stride, self.sampling_ratio, aligned=True
                ).to(out.dtype)
        return out


def paste_masks_mmdet(masks: Tensor, boxes: Tensor, height: int, width: int) -> Tensor:
    """Paste RoI masks into the image as mmdet 2.x's ``FCNMaskHead`` does (``_do_paste_mask``):
    every image pixel centre inside or near a box samples the box's mask bilinearly
    (``grid_sample``, ``align_corners=False``, zeros outside the mask).

    torchvision's ``paste_masks_in_image`` instead pads the mask by one cell, resizes it to the
    box rounded to whole pixels and copies it in: the same mask lands up to a pixel off, and on
    the small boxes of a 28x28 mask head the two can disagree on most pixels.

    Args:
        masks: ``[N, 1, h, w]`` mask probabilities (or logits: sampling is linear).
        boxes: ``[N, 4]`` XYXY in the image's pixels.
        height, width: the image size.

    Returns:
        ``[N, 1, height, width]`` sampled values (threshold at mmdet's ``mask_thr_binary``,
        ``>= 0.5``, for binary masks).
    """
    n = masks.shape[0]
    out = masks.new_zeros(n, 1, height, width)
    if n == 0:
        return out
    boxes = boxes.to(torch.float32)
    ys = torch.arange(height, device=masks.device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=masks.device, dtype=torch.float32) + 0.5
    x0, y0, x1, y1 = boxes.split(1, dim=1)
    gy = (ys[None] - y0) / (y1 - y0) * 2 - 1  # [N, H]
    gx = (xs[None] - x0) / (x1 - x0) * 2 - 1  # [N, W]
    gy = torch.where(torch.isinf(gy), torch.zeros_like(gy), gy)  # zero-size boxes, as mmdet
    gx = torch.where(torch.isinf(gx), torch.zeros_like(gx), gx)
    grid = torch.stack(
        [gx[:, None, :].expand(n, height, width), gy[:, :, None].expand(n, height, width)], 3
    )
    return F.grid_sample(masks.float(), grid, align_corners=False).to(out.dtype)


class FViTTransform(GeneralizedRCNNTransform):
    """torchvision's resize / normalise / batch, optionally padding the batch to a square
    (mmdet's ``Pad(pad_to_square=True)`` in F-ViT's test pipeline: the ViT then sees the same
    padded grid as F-ViT's), still a multiple of ``size_divisible``, and optionally pasting
    masks as mmdet does (:func:`paste_masks_mmdet`, ``mmdet_paste=True``).

    ``train_size``: training images arrive already scaled and cropped to at most
    ``train_size`` (large-scale jitter, :class:`~ovdense.data.augment.LargeScaleJitter`); in
    training they are not resized and the batch is padded to a ``train_size`` square (mmdet's
    ``Pad(size=...)``). Evaluation resizes as usual."""

    def __init__(
        self,
        *args: Any,
        pad_square: bool = False,
        mmdet_paste: bool = False,
        train_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.pad_square = bool(pad_square)
        self.mmdet_paste = bool(mmdet_paste)
        self.train_size = None if train_size is None else int(train_size)

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        if self.training and self.train_size is not None:  # already scaled (LargeScaleJitter)
            if max(image.shape[-2:]) > self.train_size:
                raise ValueError(
                    f"A training image is {tuple(image.shape[-2:])}, larger than train_size "
                    f"{self.train_size}: scale and crop it first (ovdense.data.augment."
                    "LargeScaleJitter), or build the detector with train_size=None."
                )
            return image, target
        return super().resize(image, target)

    def batch_images(self, images: list[Tensor], size_divisible: int = 32) -> Tensor:
        fixed = self.training and self.train_size is not None
        if not (self.pad_square or fixed):
            return super().batch_images(images, size_divisible)
        side = max(max(int(im.shape[-2]), int(im.shape[-1])) for im in images)
        if fixed:
            assert self.train_size is not None
            side = max(side, self.train_size)
        side = -(-side // size_divisible) * size_divisible
        out = images[0].new_zeros(len(images), images[0].shape[0], side, side)
        for im, o in zip(images, out):
            o[:, : im.shape[-2], : im.shape[-1]].copy_(im)
        return out

    def postprocess(
        self,
        result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        if self.training or not self.mmdet_paste:
            return super().postprocess(result, image_shapes, original_image_sizes)
        masks = [r.pop("masks", None) for r in result]
        result = super().postprocess(result, image_shapes, original_image_sizes)
        for r, m, (h, w) in zip(result, masks, original_image_sizes, strict=True):
            if m is not None:
                r["masks"] = paste_masks_mmdet(m, r["boxes"], h, w)
        return result


class OVRoIHeads(RoIHeads):
    """torchvision's RoI heads (sampling, box coding) with an open-vocabulary box branch.

    Args:
        box_roi_pool: ``MultiScaleRoIAlign`` over the pyramid levels.
        box_head: :class:`FViTBoxHead` (or any module ``[N, C, s, s] -> ([N, D], [N, 4])``).
        classifier: :class:`TextEmbeddingClassifier`.
        background_weight: weight of the background term of the classification loss
            (F-ViT: 0.6 OV-COCO, 0.9 OV-LVIS).
        clip_temperature, alpha, beta: the test-time ensemble (see
            :func:`~ovdense.modeling.detection.classifier.geometric_ensemble`).
        min_box_size: detections narrower or lower than this (pixels) are dropped before the
            NMS (torchvision: 0.01; 0 keeps every box, as mmdet / F-ViT).
        mask_roi_pool, mask_head: the optional mask branch (F-ViT's OV-LVIS configs): RoI
            features of the final boxes -> :class:`FViTMaskHead` -> ``masks`` ``[M, 1, 2s, 2s]``
            probabilities at inference; in training ``loss_mask`` (targets need ``masks``).
        Other arguments: torchvision's ``RoIHeads``.
    """

    def __init__(
        self,
        box_roi_pool: nn.Module,
        box_head: nn.Module,
        classifier: TextEmbeddingClassifier,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        score_thresh: float = 0.01,
        nms_thresh: float = 0.4,
        detections_per_img: int = 100,
        background_weight: float = 0.6,
        clip_temperature: float = 75.0,
        alpha: float = 0.1,
        beta: float = 0.8,
        min_box_size: float = 1e-2,
        mask_roi_pool: nn.Module | None = None,
        mask_head: nn.Module | None = None,
    ) -> None:
        super().__init__(
            box_roi_pool,
            box_head,
            classifier,
            fg_iou_thresh,
            bg_iou_thresh,
            batch_size_per_image,
            positive_fraction,
            bbox_reg_weights,
            score_thresh,
            nms_thresh,
            detections_per_img,
        )
        self.background_weight = float(background_weight)
        self.clip_temperature = float(clip_temperature)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.min_box_size = float(min_box_size)
        if (mask_roi_pool is None) != (mask_head is None):
            raise ValueError("mask_roi_pool and mask_head go together (both or neither).")
        # torchvision's attribute names, so that ``has_mask()`` reports the branch
        self.mask_roi_pool = mask_roi_pool
        self.mask_head = mask_head

    def losses(
        self, logits: Tensor, deltas: Tensor, labels: Tensor, regression_targets: Tensor
    ) -> dict[str, Tensor]:
        """Weighted cross-entropy (background weight) and L1 on the positives' deltas, both
        divided by the number of sampled RoIs (mmdet's ``avg_factor``)."""
        n = max(labels.numel(), 1)
        weight = logits.new_ones(logits.shape[1])
        weight[0] = self.background_weight
        ce = F.cross_entropy(logits, labels, weight=weight, reduction="none").sum() / n
        pos = labels > 0
        l1 = (deltas[pos] - regression_targets[pos]).abs().sum() / n
        return {"loss_cls": ce, "loss_box_reg": l1}

    def forward(
        self,
        features: Mapping[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        class_embeds: Tensor,
        targets: list[dict[str, Tensor]] | None = None,
        clip_dense: Tensor | None = None,
        clip_stride: int | None = None,
        is_base: Tensor | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Training (``targets`` with labels ``1..K``): ``([], losses)``. Inference: one dict per
        image with ``boxes`` ``[M, 4]`` XYXY (in ``image_shapes`` coordinates), ``scores``
        ``[M]`` and ``labels`` ``[M]`` (class index ``0..K-1``); with ``clip_dense`` the scores
        are the ensemble (``is_base`` ``[K]`` bool; default: every class novel)."""
        if self.training:
            if targets is None:
                raise ValueError("targets are needed in training mode.")
            proposals, matched, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
        roi_feats = self.box_roi_pool(features, proposals, image_shapes)
        cls_feats, deltas = self.box_head(roi_feats)
        classifier: TextEmbeddingClassifier = self.box_predictor
        logits = classifier(cls_feats, class_embeds)
        if self.training:
            assert targets is not None
            losses = self.losses(logits, deltas, torch.cat(labels), torch.cat(regression_targets))
            if self.mask_head is not None:
                losses["loss_mask"] = self._mask_loss(
                    features, proposals, image_shapes, targets, matched, labels
                )
            return [], losses
        probs = logits.float().softmax(dim=-1)
        if clip_dense is not None:
            if clip_stride is None:
                raise ValueError("clip_stride is needed with clip_dense.")
            region = box_features(clip_dense, proposals, clip_stride, output_size=1)
            clip_probs = clip_region_probs(
                region, classifier.weights(class_embeds), self.clip_temperature
            )
            base = (
                torch.zeros(probs.shape[1] - 1, dtype=torch.bool)
                if is_base is None
                else is_base.bool()
            )
            probs = geometric_ensemble(probs, clip_probs, base, self.alpha, self.beta)
        boxes = self.box_coder.decode(deltas, proposals)[:, 0]  # [N, 4]
        dets = self.postprocess(boxes, probs, proposals, image_shapes)
        if self.mask_head is not None and self.mask_roi_pool is not None:
            det_boxes = [d["boxes"] for d in dets]
            probs_m = self.mask_head(
                self.mask_roi_pool(features, det_boxes, image_shapes)
            ).sigmoid()
            for d, m in zip(dets, probs_m.split([b.shape[0] for b in det_boxes]), strict=True):
                d["masks"] = m
        return dets, {}

    def _mask_loss(
        self,
        features: Mapping[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
        matched: list[Tensor],
        labels: list[Tensor],
    ) -> Tensor:
        """torchvision's Mask R-CNN loss on the positive RoIs, one class-agnostic channel."""
        if any("masks" not in t for t in targets):
            raise ValueError(
                "This detector has a mask head: every training target needs 'masks' "
                "([M, H, W] per image), or build it with mask_head=False."
            )
        pos = [torch.nonzero(lab > 0).squeeze(1) for lab in labels]
        pos_props = [p[i] for p, i in zip(proposals, pos, strict=True)]
        assert self.mask_roi_pool is not None and self.mask_head is not None
        mask_logits = self.mask_head(self.mask_roi_pool(features, pos_props, image_shapes))
        if mask_logits.shape[0] == 0:
            return mask_logits.sum() * 0.0
        return maskrcnn_loss(
            mask_logits,
            pos_props,
            [t["masks"] for t in targets],
            [torch.zeros_like(t["labels"]) for t in targets],  # one class-agnostic channel
            [m[i] for m, i in zip(matched, pos, strict=True)],
        )

    def postprocess(
        self,
        boxes: Tensor,
        probs: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Per image: clip boxes, every (box, class) above ``score_thresh``, boxes under
        ``min_box_size`` dropped, class-wise NMS, the ``detections_per_img`` best."""
        out = []
        counts = [p.shape[0] for p in proposals]
        for b, s, shape in zip(boxes.split(counts), probs.split(counts), image_shapes):
            b = clip_boxes_to_image(b, shape)
            k = s.shape[1] - 1
            scores = s[:, 1:].reshape(-1)
            labels = torch.arange(k, device=s.device).repeat(s.shape[0])
            bb = b[:, None].expand(-1, k, 4).reshape(-1, 4)
            keep = scores > self.score_thresh
            bb, scores, labels = bb[keep], scores[keep], labels[keep]
            if self.min_box_size > 0:
                keep = remove_small_boxes(bb, self.min_box_size)
                bb, scores, labels = bb[keep], scores[keep], labels[keep]
            keep = batched_nms(bb, scores, labels, self.nms_thresh)[: self.detections_per_img]
            out.append({"boxes": bb[keep], "scores": scores[keep], "labels": labels[keep]})
        return out


class FViTDetector(nn.Module):
    """Open-vocabulary two-stage detector on a frozen dense CLIP ViT (F-ViT).

    Args:
        backbone: a dense CLIP backbone whose ``out_indices`` are the four tapped blocks
            (frozen here: no gradient, always in eval mode).
        pyramid: :class:`SimpleFeaturePyramid` over the tapped blocks' width.
        rpn: torchvision ``RegionProposalNetwork`` over the pyramid levels.
        roi_heads: :class:`OVRoIHeads`.
        transform: torchvision ``GeneralizedRCNNTransform`` (resize, the backbone's mean/std,
            padding to a multiple of ``2 x patch``).
        train_class_embeds: ``[K, D]`` embeddings of the training vocabulary (the base classes;
            training labels index it).
        train_classes: the names of that vocabulary (kept for reports).
        text_encoder: the CLIP's text side (frozen), to detect vocabularies given by name.

    ``forward(batch)`` in training mode takes ``{"images": [3, H, W] floats in [0, 1] (list),
    "targets": [{"boxes": [M, 4] XYXY pixels, "labels": [M] indices into the training
    vocabulary (, "masks": [M, H, W] with a mask head)}]}`` and returns the losses
    (``loss_objectness``, ``loss_rpn_box_reg``, ``loss_cls``, ``loss_box_reg`` (,
    ``loss_mask``)). :meth:`predict` detects any vocabulary.
    """

    train_class_embeds: Tensor

    def __init__(
        self,
        backbone: DenseTowerBackbone,
        pyramid: SimpleFeaturePyramid,
        rpn: RegionProposalNetwork,
        roi_heads: OVRoIHeads,
        transform: GeneralizedRCNNTransform,
        train_class_embeds: Tensor,
        train_classes: Sequence[str] = (),
        text_encoder: TextEncoder | None = None,
    ) -> None:
        super().__init__()
        if len(backbone.out_indices) != len(pyramid.scales):
            raise ValueError(
                f"The backbone taps {len(backbone.out_indices)} blocks "
                f"({list(backbone.out_indices)}); the pyramid takes {len(pyramid.scales)}."
            )
        self.backbone = backbone.requires_grad_(False).eval()
        self.pyramid = pyramid
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.transform = transform
        self.register_buffer("train_class_embeds", class_embedding_matrix(train_class_embeds))
        self.train_classes = list(train_classes)
        # frozen too: the vocabulary is free at test time, its embeddings come from here
        self.text_encoder = None if text_encoder is None else text_encoder.requires_grad_(False)

    def encode(self, vocabulary: Sequence[str | Sequence[str]]) -> Tensor:
        """``[K, D]`` class embeddings of a vocabulary (synonyms averaged) with the CLIP's text
        tower (the one given as ``text_encoder``)."""
        if self.text_encoder is None:
            raise RuntimeError(
                "This detector has no text encoder: pass class embeddings ([K, D]) instead of "
                "names, or build it with text_encoder=TextEncoder(clip)."
            )
        return class_embedding_matrix(self.text_encoder(vocabulary))

    def train(self, mode: bool = True) -> FViTDetector:
        super().train(mode)
        self.backbone.eval()  # frozen CLIP: dropout / batch statistics never change
        return self

    def _features(self, images: Tensor) -> tuple[OrderedDict[str, Tensor], Tensor, int]:
        with torch.no_grad():
            feats = self.backbone(images)
        taps = [feats.intermediates[f"block{i}"].detach() for i in self.backbone.out_indices]
        return self.pyramid(taps), feats.dense, feats.stride

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Training losses for a batch (see the class docstring)."""
        if not self.training:
            raise RuntimeError("forward(batch) computes training losses; use .predict(...).")
        images = list(batch["images"])
        targets: list[dict[str, Tensor]] = []
        for t in batch["targets"]:
            target = {"boxes": t["boxes"].float(), "labels": t["labels"].long() + 1}
            if "masks" in t:  # [M, H, W] at the image's size, for the mask head
                target["masks"] = t["masks"]
            targets.append(target)
        dropped = 0
        for t in targets:  # degenerate boxes would give infinite regression targets
            keep = (t["boxes"][:, 2] - t["boxes"][:, 0] >= 1) & (
                t["boxes"][:, 3] - t["boxes"][:, 1] >= 1
            )
            dropped += int((~keep).sum())
            for key in list(t):
                t[key] = t[key][keep]
        if dropped:
            warnings.warn(
                f"{dropped} degenerate target boxes (under 1 px wide or high) left out of this "
                "batch.",
                stacklevel=2,
            )
        k = int(self.train_class_embeds.shape[0])
        for t in targets:
            if t["labels"].numel() and int(t["labels"].max()) > k:
                raise ValueError(
                    f"A training label is {int(t['labels'].max()) - 1}, but the training "
                    f"vocabulary has {k} classes."
                )
        image_list, targets_t = self.transform(images, targets)
        feats, _, _ = self._features(image_list.tensors)
        proposals, rpn_losses = self.rpn(image_list, feats, targets_t)
        _, roi_losses = self.roi_heads(
            feats, proposals, image_list.image_sizes, self.train_class_embeds, targets_t
        )
        return {**rpn_losses, **roi_losses}

    @torch.no_grad()
    def predict(
        self,
        images: Sequence[Tensor],
        vocabulary: ClassEmbeddings | Tensor | Sequence[str | Sequence[str]],
        is_base: Tensor | Sequence[bool] | None = None,
        ensemble: bool = True,
    ) -> list[dict[str, Tensor]]:
        """Detect a vocabulary.

        Args:
            images: ``[3, H, W]`` float images in ``[0, 1]``, any sizes.
            vocabulary: class names (a list; a class's synonyms as a list or ``"a|b"``),
                ``[K, D]`` class embeddings, or ClassEmbeddings (synonyms averaged).
            is_base: ``[K]`` which classes the detector was trained on (ensemble weight
                ``alpha``); the others get ``beta``. Default: all novel.
            ensemble: combine with the frozen CLIP's RoI score (F-ViT); ``False``: the
                detector's softmax alone.

        Returns:
            One dict per image: ``boxes`` ``[M, 4]`` XYXY in the input image's pixels,
            ``scores`` ``[M]``, ``labels`` ``[M]`` (class index ``0..K-1``); with a mask head
            also ``masks`` ``[M, 1, H, W]`` mask probabilities pasted into the input image
            (binary masks: ``>= 0.5``).
        """
        was_training = self.training
        self.eval()
        try:
            images = list(images)
            sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
            image_list, _ = self.transform(images)
            feats, dense, stride = self._features(image_list.tensors)
            proposals, _ = self.rpn(image_list, feats)
            base = None
            if is_base is not None:
                base = torch.as_tensor(
                    list(is_base) if not isinstance(is_base, Tensor) else is_base
                )
            if isinstance(vocabulary, Tensor | ClassEmbeddings):
                emb = class_embedding_matrix(vocabulary)
            else:
                emb = self.encode(vocabulary)
            emb = emb.to(dense.device)
            dets, _ = self.roi_heads(
                feats,
                proposals,
                image_list.image_sizes,
                emb,
                clip_dense=dense if ensemble else None,
                clip_stride=stride,
                is_base=base,
            )
            return self.transform.postprocess(dets, image_list.image_sizes, sizes)
        finally:
            self.train(was_training)


def default_taps(num_blocks: int) -> tuple[int, ...]:
    """F-ViT's taps for 12 blocks (3, 5, 7, 11), spread the same way over other depths."""
    if num_blocks >= 4:
        return tuple(round(f * num_blocks) - 1 for f in (1 / 3, 1 / 2, 2 / 3)) + (num_blocks - 1,)
    return (num_blocks - 1,) * 4


def build_fvit(
    clip: nn.Module,
    train_classes: Sequence[str],
    strategy: str = "maskclip",
    out_indices: Sequence[int] | None = None,
    scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
    templates: str | Sequence[str] = "openai_imagenet",
    pyramid_channels: int = 256,
    pyramid_norm: bool = True,
    min_size: int = 640,
    max_size: int = 640,
    anchor_scale: float = 8.0,
    box_convs: int = 4,
    box_conv_dim: int = 256,
    box_fc_dim: int = 512,
    roi_size: int = 7,
    rpn_batch_size_per_image: int = 256,
    rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000),
    rpn_post_nms_top_n: tuple[int, int] = (1000, 1000),
    rpn_norm: bool = False,
    roi_batch_size_per_image: int = 512,
    temperature: float = 50.0,
    learn_background: bool = True,
    background_weight: float = 0.6,
    clip_temperature: float = 75.0,
    alpha: float = 0.1,
    beta: float = 0.8,
    score_thresh: float = 0.01,
    nms_thresh: float = 0.4,
    detections_per_img: int = 100,
    mask_head: bool = False,
    mask_roi_size: int = 14,
    mask_convs: int = 4,
    mmdet_ops: bool = False,
    train_size: int | None = None,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    train_class_embeds: Tensor | None = None,
    background_embed: Tensor | None = None,
) -> FViTDetector:
    """An F-ViT detector on an open_clip model (defaults: F-ViT's OV-COCO ViT-B/16 settings).

    Args:
        clip: the open_clip model (frozen; its text tower embeds ``train_classes`` and
            ``"background"``, the initial background embedding), or its image tower alone
            together with ``train_class_embeds`` and ``background_embed``.
        train_classes: the training vocabulary (base classes), one name per class.
        strategy: the dense last block (F-ViT: ``maskclip``, its last block without attention).
        out_indices: the tapped blocks, one per pyramid scale (default: F-ViT's 3, 5, 7, 11
            for 12 blocks, spread alike for other depths, the last ones for fewer scales; the
            last block's tap goes through ``strategy``).
        scales: the pyramid's resampling of each tap (F-ViT: 4, 2, 1, 0.5 -> strides p/4 to
            2p; a subset such as ``(2, 1, 0.5)`` drops the finest level).
        templates: prompt templates of the text embeddings.
        pyramid_channels, pyramid_norm: :class:`SimpleFeaturePyramid`.
        min_size, max_size: torchvision's resize (F-ViT: 640 for ViT-B/16 OV-COCO).
        anchor_scale: anchor side per level = ``anchor_scale x stride`` (F-ViT: 8).
        box_convs, box_conv_dim, box_fc_dim, roi_size: :class:`FViTBoxHead`.
        rpn_*, roi_batch_size_per_image: torchvision's RPN / sampling settings;
            ``rpn_norm`` batch-normalises the RPN convolutions (F-ViT's OV-LVIS
            ``CustomRPNHead``).
        temperature, learn_background: :class:`TextEmbeddingClassifier`.
        background_weight, clip_temperature, alpha, beta, score_thresh, nms_thresh,
            detections_per_img: :class:`OVRoIHeads`.
        mask_head, mask_roi_size, mask_convs: add :class:`FViTMaskHead` (``mask_convs``
            convolutions of ``box_conv_dim``) on ``mask_roi_size`` RoIs (F-ViT's OV-LVIS
            configs: 4 convolutions, 14).
        mmdet_ops: mmdet 2.x's anchors, RoI pooling and post-processing and a square-padded
            batch (see the module doc), to run F-ViT's released weights as F-ViT does.
        train_size: training images come scaled and cropped to at most this side (F-ViT's
            OV-LVIS large-scale jitter, :class:`~ovdense.data.augment.LargeScaleJitter`): no
            resize in training, batches padded to this square (:class:`FViTTransform`).
        image_mean, image_std: input normalisation (default the CLIP's; F-ViT's configs use
            ImageNet's, :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`).
        train_class_embeds, background_embed: ``[K, D]`` / ``[D]`` embeddings to use instead of
            encoding ``train_classes`` / ``"background"`` (the detector then has no text
            encoder unless ``clip`` has a text tower; e.g. F-ViT's released embeddings).
    """
    from ..backbones.clip_vit import dense_backbone_for

    visual = getattr(clip, "visual", clip)
    probe = dense_backbone_for(visual, strategy=strategy)
    taps = (
        tuple(out_indices)
        if out_indices is not None
        else default_taps(probe.num_blocks)[-len(scales) :]
    )
    if len(taps) != len(scales):
        raise ValueError(
            f"out_indices must name one block per scale ({len(scales)}), got {list(taps)}."
        )
    backbone = dense_backbone_for(visual, strategy=strategy, out_indices=taps)
    # repeated taps (ViTDet-style: the last block four times) are one intermediate
    backbone.out_indices = tuple(i if i >= 0 else i + backbone.num_blocks for i in taps)
    has_text = visual is not clip
    encoder = TextEncoder(clip, templates=templates, progress=False) if has_text else None
    if train_class_embeds is None or background_embed is None:
        if encoder is None:
            raise ValueError(
                "clip is an image tower only: pass train_class_embeds and background_embed, or "
                "an open_clip model with its text tower."
            )
    if train_class_embeds is None:
        assert encoder is not None
        embeds = encoder.encode_names(list(train_classes)).float()
    else:
        embeds = train_class_embeds.detach().float()
        if embeds.ndim != 2 or embeds.shape[0] != len(train_classes):
            raise ValueError(
                f"train_class_embeds must be [K, D] with K = {len(train_classes)} "
                f"(train_classes), got {tuple(embeds.shape)}."
            )
    if background_embed is None:
        assert encoder is not None
        background = encoder.encode_names(["background"])[0].float()
    else:
        background = background_embed.detach().float().reshape(-1)
    d = embeds.shape[1]
    pyramid = SimpleFeaturePyramid(backbone.width, pyramid_channels, scales, norm=pyramid_norm)
    levels = [str(i) for i in range(len(scales))]
    if mmdet_ops:
        strides = [backbone.patch_size / float(sc) for sc in pyramid.scales]
        strides.append(strides[-1] * 2)
        anchors: AnchorGenerator = MMDetAnchorGenerator(strides, anchor_scale)
        roi_pool: nn.Module = LevelRoIAlign(levels, roi_size, strides[: len(levels)])
        mask_pool: nn.Module = LevelRoIAlign(levels, mask_roi_size, strides[: len(levels)])
    else:
        int_strides = pyramid.strides(backbone.patch_size)
        anchors = AnchorGenerator(
            tuple((anchor_scale * s,) for s in int_strides), ((0.5, 1.0, 2.0),) * len(int_strides)
        )
        roi_pool = MultiScaleRoIAlign(levels, roi_size, sampling_ratio=0)
        mask_pool = MultiScaleRoIAlign(levels, mask_roi_size, sampling_ratio=0)
    rpn_head = RPNHead(pyramid_channels, 3, conv_depth=2)
    if rpn_norm:
        rpn_head.conv = nn.Sequential(
            *(
                Conv2dNormActivation(
                    pyramid_channels, pyramid_channels, 3, norm_layer=nn.BatchNorm2d
                )
                for _ in range(2)
            )
        )
    rpn = RegionProposalNetwork(
        anchors,
        rpn_head,
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=rpn_batch_size_per_image,
        positive_fraction=0.5,
        pre_nms_top_n={"training": rpn_pre_nms_top_n[0], "testing": rpn_pre_nms_top_n[1]},
        post_nms_top_n={"training": rpn_post_nms_top_n[0], "testing": rpn_post_nms_top_n[1]},
        nms_thresh=0.7,
    )
    if mmdet_ops:
        rpn.min_size = 1e-12  # mmdet keeps proposals wider and higher than 0
        rpn.box_coder = MMDetBoxCoder(rpn.box_coder.weights)
    head = FViTBoxHead(
        pyramid_channels, roi_size, d, box_conv_dim, box_convs, box_fc_dim, num_fcs=2
    )
    classifier = TextEmbeddingClassifier(
        d, temperature=temperature, background_embed=background, learn_background=learn_background
    )
    roi_heads = OVRoIHeads(
        roi_pool,
        head,
        classifier,
        batch_size_per_image=roi_batch_size_per_image,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        background_weight=background_weight,
        clip_temperature=clip_temperature,
        alpha=alpha,
        beta=beta,
        min_box_size=0.0 if mmdet_ops else 1e-2,
        mask_roi_pool=mask_pool if mask_head else None,
        mask_head=FViTMaskHead(pyramid_channels, box_conv_dim, mask_convs) if mask_head else None,
    )
    if mmdet_ops:
        roi_heads.box_coder = MMDetBoxCoder(roi_heads.box_coder.weights)
    transform = FViTTransform(
        min_size,
        max_size,
        list(backbone.mean if image_mean is None else image_mean),
        list(backbone.std if image_std is None else image_std),
        size_divisible=4 * backbone.patch_size,
        pad_square=mmdet_ops,
        mmdet_paste=mmdet_ops,
        train_size=train_size,
    )
    return FViTDetector(
        backbone, pyramid, rpn, roi_heads, transform, embeds, train_classes, encoder
    )
