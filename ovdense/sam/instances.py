"""Open-vocabulary instances: SAM's automatic masks labelled by a segmentor's dense features.

:class:`SamInstanceSegmenter` runs segment-anything's ``SamAutomaticMaskGenerator`` on an image
(or takes masks from anywhere: :meth:`~SamInstanceSegmenter.classify_masks`), pools the
segmentor's dense features under every mask (:class:`~ovdense.modeling.heads.RegionClassifier`,
mask pooling) and compares them with the text embeddings of a vocabulary::

    from ovdense import build_segmentor
    from ovdense.sam import SamInstanceSegmenter, build_sam

    sam = build_sam("vit_b", checkpoint="sam_vit_b_01ec64.pth")
    labeler = SamInstanceSegmenter(build_segmentor("naclip"), sam)
    inst = labeler.predict("kitchen.jpg", ["cup", "plate", "background"])
    inst.masks, inst.labels, inst.scores, inst.boxes        # [K, H, W], [K], [K], [K, 4]

The rules, in order:

1. **Features.** The image is resized as the segmentor does (short side to ``short_side``, long
   side capped by ``max_long_side``) and its dense features are computed once over the whole
   image (``segmentor.forward_features``: backbone, then its refiner if any), as the region
   benchmark does (:func:`ovdense.evaluation.regions.evaluate_regions`).
2. **Classification.** Each mask is resized to the resized image (bilinear with antialiasing:
   soft coverage in ``[0, 1]``), pooled (coverage-weighted mean of the features) and scored
   against every name with the segmentor's ``logit_scale``; class probabilities are the softmax
   over *names*, then the max over each class's synonyms (the segmentor's convention). The label
   is the most probable class. A mask that covers no feature cell cannot be classified and is
   dropped.
3. **Background.** With ``prob_thd`` (default: the segmentor's), a mask whose class probability
   is below it is labelled background (the vocabulary needs a background class, as for
   segmentation). Masks labelled background (the segmentor's ``background_index``, else the
   vocabulary's class named background / bg / backdrop) are dropped.
4. **Score.** ``score_mode="prob"``: the class probability; ``"prob_iou"``: the class
   probability times SAM's predicted IoU (clipped to ``[0, 1]``; masks given without one count
   1.0). Masks below ``min_score`` are dropped.
5. **NMS.** Greedy mask-IoU suppression (:func:`~ovdense.sam.nms.mask_nms`) above ``nms_iou``,
   per class (default) or class-agnostic; then at most ``max_instances``, by decreasing score.

Memory: the masks are held as one ``[K, H, W]`` bool array (SAM returns them so); everything
else is done ``mask_batch`` masks at a time (resize, pooling, ``[mask_batch, names]`` logits)
and the NMS holds a ``[K, K]`` IoU matrix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..modeling.backbones.base import DenseFeatures
from ..modeling.heads.region import RegionClassifier
from ..modeling.segmentors.base import rescale_size
from ..utils.image import load_image
from ..vocabulary import Vocabulary
from .nms import mask_nms

__all__ = [
    "SCORE_MODES",
    "Instances",
    "MaskGenerator",
    "MaskGeneratorOptions",
    "SamInstanceSegmenter",
    "dense_image_features",
    "masks_to_boxes",
]

ScoreMode = Literal["prob", "prob_iou"]
#: How an instance's score is made (see the module docstring, rule 4).
SCORE_MODES: tuple[str, ...] = ("prob", "prob_iou")

ImageLike = str | os.PathLike | np.ndarray | PIL.Image.Image | Tensor


class MaskGenerator(Protocol):
    """Anything with segment-anything's ``SamAutomaticMaskGenerator.generate`` contract: an
    ``[H, W, 3]`` uint8 RGB image in, a list of records out, each with ``"segmentation"`` (an
    ``[H, W]`` bool mask) and optionally ``"predicted_iou"`` and ``"stability_score"``."""

    def generate(self, image: np.ndarray) -> list[dict[str, Any]]: ...


@dataclass
class MaskGeneratorOptions:
    """Options of segment-anything's ``SamAutomaticMaskGenerator`` (same names, same defaults).

    Attributes:
        points_per_side: the point grid is ``points_per_side x points_per_side`` per crop.
        points_per_batch: points run through SAM's decoder at once (memory).
        pred_iou_thresh: drop masks whose predicted IoU is below this, in ``[0, 1]``.
        stability_score_thresh: drop masks whose stability score is below this, in ``[0, 1]``.
        stability_score_offset: the mask-logit offset of the stability score.
        box_nms_thresh: SAM's own box NMS of duplicate masks.
        crop_n_layers: extra layers of image crops (0: the whole image only).
        crop_nms_thresh: box NMS between masks of different crops.
        crop_overlap_ratio: overlap of neighbouring crops (fraction of the crop side).
        crop_n_points_downscale_factor: points per side divided by this at each crop layer.
        min_mask_region_area: SAM's post-processing that removes disconnected regions and holes
            smaller than this many pixels (0: off; needs OpenCV).
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0

    def __post_init__(self) -> None:
        for name in ("points_per_side", "points_per_batch", "crop_n_points_downscale_factor"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("crop_n_layers", "min_mask_region_area"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in (
            "pred_iou_thresh",
            "stability_score_thresh",
            "box_nms_thresh",
            "crop_nms_thresh",
            "crop_overlap_ratio",
        ):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")

    def build(self, sam: nn.Module) -> MaskGenerator:
        """segment-anything's ``SamAutomaticMaskGenerator`` over ``sam`` with these options
        (binary masks out)."""
        from segment_anything import SamAutomaticMaskGenerator

        generator: MaskGenerator = SamAutomaticMaskGenerator(
            sam, output_mode="binary_mask", **asdict(self)
        )
        return generator


@dataclass
class Instances:
    """One image's open-vocabulary instances, by decreasing score.

    Attributes:
        masks: ``[K, H, W]`` bool masks at the image's size.
        labels: ``[K]`` int64 class indices into ``classes``.
        scores: ``[K]`` float32 scores (see :class:`SamInstanceSegmenter`'s score rule).
        class_probs: ``[K]`` float32 probability of each instance's class.
        sam_iou: ``[K]`` float32 SAM's predicted IoU (1.0 for masks given without one).
        boxes: ``[K, 4]`` float32 ``x1, y1, x2, y2`` pixel boxes of the masks, ``x2`` / ``y2``
            exclusive (a one-pixel mask at column 3 has ``x1 = 3, x2 = 4``; COCO's
            ``[x, y, w, h]`` is ``[x1, y1, x2 - x1, y2 - y1]``).
        classes: ``C`` display names of the vocabulary's classes.
        vocabulary: the full :class:`~ovdense.vocabulary.Vocabulary` (with synonyms).
        background_index: the background class (its masks were dropped), or ``None``.
    """

    masks: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    class_probs: np.ndarray
    sam_iou: np.ndarray
    boxes: np.ndarray
    classes: list[str]
    vocabulary: Vocabulary
    background_index: int | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    @property
    def names(self) -> list[str]:
        """The class name of each instance."""
        return [self.classes[int(i)] for i in self.labels]

    def label_map(self, fill: int = -1) -> np.ndarray:
        """``[H, W]`` int64 class index per pixel: instances painted from the lowest score up
        (the best-scored instance wins where they overlap), ``fill`` where there is none."""
        out = np.full(self.image_size, fill, dtype=np.int64)
        for k in np.argsort(self.scores, kind="stable"):
            out[self.masks[k]] = int(self.labels[k])
        return out

    def class_areas(self) -> dict[str, float]:
        """Fraction of the image covered by each present class's instances (their union),
        largest first."""
        h, w = self.image_size
        areas = {}
        for c in np.unique(self.labels):
            union = np.any(self.masks[self.labels == c], axis=0)
            areas[self.classes[int(c)]] = float(union.sum()) / max(1, h * w)
        return dict(sorted(areas.items(), key=lambda kv: -kv[1]))


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """``[K, H, W]`` bool masks -> ``[K, 4]`` float32 ``x1, y1, x2, y2`` (``x2``, ``y2``
    exclusive); an empty mask gets ``[0, 0, 0, 0]``."""
    boxes = np.zeros((masks.shape[0], 4), dtype=np.float32)
    for k, m in enumerate(masks):
        cols = np.flatnonzero(m.any(axis=0))
        rows = np.flatnonzero(m.any(axis=1))
        if cols.size:
            boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


@torch.no_grad()
def dense_image_features(
    segmentor: Any, image: np.ndarray
) -> tuple[DenseFeatures, tuple[int, int]]:
    """The segmentor's dense features of a whole image, as the region benchmark computes them.

    Args:
        segmentor: a :class:`~ovdense.modeling.segmentors.Segmentor` (``backbone`` with
            ``normalize``; ``forward_features`` is used when present; ``short_side``,
            ``max_long_side`` and ``pad_to_patch`` are read when present).
        image: ``[H, W, 3]`` uint8 RGB.

    Returns:
        ``(features, (Hr, Wr))``: :class:`DenseFeatures` with ``dense`` ``[1, D, h, w]`` and
        the size of the resized image the features cover (cell ``(i, j)`` spans pixels
        ``[i s, (i + 1) s) x [j s, (j + 1) s)`` of it, ``s = features.stride``).
    """
    backbone = segmentor.backbone
    device = next(backbone.parameters()).device
    h, w = image.shape[:2]
    hr, wr = rescale_size(
        h, w, getattr(segmentor, "short_side", None), getattr(segmentor, "max_long_side", None)
    )
    pixels = np.ascontiguousarray(image)
    x = torch.from_numpy(pixels) if pixels.flags.writeable else torch.tensor(pixels)
    x = x.permute(2, 0, 1)[None]
    x = x.to(device, torch.float32) / 255.0
    if (hr, wr) != (h, w):
        x = F.interpolate(x, size=(hr, wr), mode="bilinear", align_corners=False)
    x = backbone.normalize(x)
    if getattr(segmentor, "pad_to_patch", False) and hasattr(segmentor, "pad_images"):
        x = segmentor.pad_images(x)  # bottom / right padding: the masks are padded alike
    if hasattr(segmentor, "forward_features"):
        feats = segmentor.forward_features(x)[0]
    else:
        feats = backbone(x)
    return feats, (hr, wr)


class SamInstanceSegmenter:
    """SAM's automatic masks labelled with any vocabulary (see the module docstring).

    Args:
        segmentor: any ovdense segmentor (preset), e.g. ``build_segmentor("naclip")``: its
            dense features, text encoder, ``logit_scale``, ``prob_thd`` and
            ``background_index`` are used.
        sam: segment-anything's ``Sam`` (:func:`~ovdense.sam.build_sam`, or
            :func:`~ovdense.sam.tiny_sam` for tests); not needed with ``mask_generator`` or
            :meth:`classify_masks`.
        generator_options: :class:`MaskGeneratorOptions` (or a mapping of its fields).
        mask_generator: any :class:`MaskGenerator` instead of one built from ``sam``.
        mask_source: a :class:`~ovdense.sam.mask_source.MaskSource` (e.g. a cached
            :class:`~ovdense.sam.mask_source.SamMaskSource`, shared with other methods) instead
            of a generator: its masks are labelled (predicted IoU from its
            ``generate_with_scores`` when it has one, else 1.0).
        score_mode: ``"prob"`` or ``"prob_iou"`` (rule 4).
        nms_iou: mask-IoU threshold of the NMS; ``None`` (or 1.0) keeps overlapping masks.
        class_agnostic_nms: suppress across classes too.
        min_score: drop instances scored below this.
        min_area: drop masks of fewer pixels (before classification).
        max_instances: keep at most this many (by score); ``None``: all.
        mask_batch: masks resized and pooled at once (memory: ``mask_batch * Hr * Wr * 4``
            bytes, plus ``mask_batch * H * W`` for the originals).
        progress: show a progress bar when an image has many masks.
    """

    def __init__(
        self,
        segmentor: Any,
        sam: nn.Module | None = None,
        generator_options: MaskGeneratorOptions | Mapping[str, Any] | None = None,
        *,
        mask_generator: MaskGenerator | None = None,
        mask_source: Callable[[np.ndarray], Tensor] | None = None,
        score_mode: ScoreMode = "prob",
        nms_iou: float | None = 0.5,
        class_agnostic_nms: bool = False,
        min_score: float = 0.0,
        min_area: int = 0,
        max_instances: int | None = None,
        mask_batch: int = 64,
        progress: bool = True,
    ) -> None:
        if score_mode not in SCORE_MODES:
            raise ValueError(f"score_mode must be one of {SCORE_MODES}, got {score_mode!r}.")
        if nms_iou is not None and not 0.0 <= float(nms_iou) <= 1.0:
            raise ValueError(f"nms_iou must be in [0, 1] (or None: no NMS), got {nms_iou}.")
        if not 0.0 <= float(min_score) <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}.")
        if min_area < 0 or mask_batch < 1 or (max_instances is not None and max_instances < 0):
            raise ValueError(
                f"min_area >= 0, mask_batch >= 1 and max_instances >= 0 are needed, got "
                f"{min_area}, {mask_batch}, {max_instances}."
            )
        if isinstance(generator_options, Mapping):
            generator_options = MaskGeneratorOptions(**generator_options)
        self.segmentor = segmentor
        self.sam = sam
        self.generator_options = generator_options or MaskGeneratorOptions()
        self._generator = mask_generator
        self.mask_source = mask_source
        self.score_mode: ScoreMode = score_mode
        self.nms_iou = None if nms_iou is None else float(nms_iou)
        self.class_agnostic_nms = bool(class_agnostic_nms)
        self.min_score = float(min_score)
        self.min_area = int(min_area)
        self.max_instances = max_instances
        self.mask_batch = int(mask_batch)
        self.progress = progress
        self.classifier = RegionClassifier(empty="zero")

    @property
    def mask_generator(self) -> MaskGenerator:
        """The mask generator (built from ``sam`` on first use)."""
        if self._generator is None:
            if self.sam is None:
                raise ValueError(
                    "SamInstanceSegmenter needs a SAM model (sam=build_sam(...)) or a "
                    "mask_generator to make masks; classify_masks() takes masks directly."
                )
            self._generator = self.generator_options.build(self.sam)
        return self._generator

    def generate_masks(self, image: ImageLike) -> tuple[np.ndarray, np.ndarray]:
        """SAM's automatic masks of an image (from ``mask_source`` when one is set).

        Returns:
            ``(masks, predicted_iou)``: ``[K, H, W]`` bool and ``[K]`` float32 (1.0 where the
            generator gives none).
        """
        rgb = load_image(image)
        if self.mask_source is not None:
            with_scores = getattr(self.mask_source, "generate_with_scores", None)
            if with_scores is not None:
                masks, iou = with_scores(rgb)
                return np.asarray(masks, dtype=bool), np.asarray(iou, dtype=np.float32)
            m = self.mask_source(rgb).numpy().astype(bool, copy=False)
            return m, np.ones(m.shape[0], dtype=np.float32)
        records = self.mask_generator.generate(rgb)
        return _stack_records(records, rgb.shape[:2])

    def predict(
        self,
        image: ImageLike,
        vocabulary: Vocabulary | Sequence[str | Sequence[str]],
        prob_thd: float | None = None,
    ) -> Instances:
        """SAM's automatic masks of ``image`` labelled with ``vocabulary``.

        Args:
            image: a path, PIL image, ``[H, W(, C)]`` array or tensor (as
                :meth:`ovdense.Predictor.set_image` takes).
            vocabulary: a :class:`Vocabulary` or a list like ``["cat", "sofa|couch"]``.
            prob_thd: background threshold on the class probability (default: the
                segmentor's ``prob_thd``); needs a background class when above 0.
        """
        rgb = load_image(image)
        masks, iou = self.generate_masks(rgb)
        return self.classify_masks(rgb, masks, vocabulary, prob_thd=prob_thd, sam_iou=iou)

    @torch.no_grad()
    def classify_masks(
        self,
        image: ImageLike,
        masks: np.ndarray | Tensor,
        vocabulary: Vocabulary | Sequence[str | Sequence[str]],
        prob_thd: float | None = None,
        sam_iou: np.ndarray | Sequence[float] | None = None,
    ) -> Instances:
        """Label given masks (from SAM, ground truth or anywhere) and apply the rules 2-5.

        Args:
            image: the image the masks belong to.
            masks: ``[K, H, W]`` bool (or 0/1) masks at the image's size.
            vocabulary: the classes.
            prob_thd: see :meth:`predict`.
            sam_iou: ``[K]`` predicted IoU of each mask (default 1.0).

        Raises:
            ValueError: masks of another size than the image, a threshold without a
                background class.
        """
        rgb = load_image(image)
        vocab = Vocabulary.coerce(vocabulary)
        h, w = rgb.shape[:2]
        m = masks.detach().cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks)
        if m.ndim != 3 or m.shape[1:] != (h, w):
            raise ValueError(
                f"masks must be [K, {h}, {w}] (the image's size), got {tuple(m.shape)}."
            )
        m = m.astype(bool, copy=False)
        k = m.shape[0]
        iou = np.ones(k, np.float32) if sam_iou is None else np.asarray(sam_iou, np.float32)
        if iou.shape != (k,):
            raise ValueError(f"sam_iou must be [K={k}], got {tuple(iou.shape)}.")
        thd, bg = self._background(vocab, prob_thd)
        keep = np.flatnonzero(m.reshape(k, h * w).sum(axis=1) >= max(1, self.min_area))
        m, iou = m[keep], iou[keep]
        probs = self._class_probs(rgb, m, vocab)  # [K, C], rows of zeros for unclassifiable
        best, labels = probs.max(dim=1)
        valid = best > 0  # softmax probabilities are > 0: zero rows are unclassifiable masks
        if thd > 0 and bg is not None:
            labels = torch.where(best < thd, torch.full_like(labels, bg), labels)
        if bg is not None:
            valid &= labels != bg
        class_prob = best
        if self.score_mode == "prob_iou":
            score = class_prob * torch.from_numpy(np.clip(iou, 0.0, 1.0))
        else:
            score = class_prob.clone()
        valid &= score >= self.min_score
        idx = torch.nonzero(valid).flatten()
        if self.nms_iou is not None and self.nms_iou < 1.0 and idx.numel() > 1:
            sub = mask_nms(
                m[idx.numpy()],
                score[idx],
                self.nms_iou,
                labels=None if self.class_agnostic_nms else labels[idx],
            )
            idx = idx[sub]
        else:
            idx = idx[torch.sort(-score[idx], stable=True).indices]
        if self.max_instances is not None:
            idx = idx[: self.max_instances]
        sel = idx.numpy()
        out_masks = m[sel] if sel.size else np.zeros((0, h, w), dtype=bool)
        return Instances(
            masks=out_masks,
            labels=labels[idx].numpy().astype(np.int64),
            scores=score[idx].numpy().astype(np.float32),
            class_probs=class_prob[idx].numpy().astype(np.float32),
            sam_iou=iou[sel].astype(np.float32),
            boxes=masks_to_boxes(out_masks),
            classes=vocab.display_names,
            vocabulary=vocab,
            background_index=bg,
        )

    def _background(self, vocab: Vocabulary, prob_thd: float | None) -> tuple[float, int | None]:
        """The probability threshold and the background class (``None``: no such class)."""
        thd = getattr(self.segmentor, "prob_thd", 0.0) if prob_thd is None else prob_thd
        thd = float(thd or 0.0)
        if not 0.0 <= thd <= 1.0:
            raise ValueError(f"prob_thd must be in [0, 1], got {thd}.")
        if thd > 0:
            resolve: Callable[..., int] | None = getattr(self.segmentor, "resolve_background", None)
            if resolve is not None:
                return thd, resolve(vocab, "prob_thd")
            if vocab.background_index is None:
                raise ValueError(
                    "prob_thd labels uncertain masks as background, but no class of this "
                    "vocabulary is named background; add one (e.g. 'background') or leave "
                    "prob_thd off."
                )
            return thd, vocab.background_index
        index = getattr(self.segmentor, "background_index", None)
        if index is not None and 0 <= index < vocab.num_classes:
            return thd, int(index)
        return thd, vocab.background_index

    def _class_probs(self, rgb: np.ndarray, masks: np.ndarray, vocab: Vocabulary) -> Tensor:
        """``[K, C]`` class probabilities of the masks; all-zero rows for masks that cover no
        feature cell."""
        k = masks.shape[0]
        if k == 0:
            return torch.zeros(0, vocab.num_classes)
        feats, (hr, wr) = dense_image_features(self.segmentor, rgb)
        text = self.segmentor.encode_text(vocab)
        device = feats.dense.device
        gh, gw = feats.dense.shape[-2:]
        s = feats.stride
        scale = float(getattr(self.segmentor, "logit_scale", 100.0))
        out = []
        starts = range(0, k, self.mask_batch)
        bar = tqdm(
            starts, desc="Labelling masks", unit="batch", leave=False,
            disable=not self.progress or len(starts) < 8,
        )  # fmt: skip
        for start in bar:
            chunk = torch.tensor(masks[start : start + self.mask_batch], device=device)
            soft = chunk[:, None].float()
            if (hr, wr) != soft.shape[-2:]:
                soft = F.interpolate(
                    soft, size=(hr, wr), mode="bilinear", align_corners=False, antialias=True
                ).clamp_(0.0, 1.0)
            soft = soft[:, 0]
            covered = soft[:, : gh * s, : gw * s].flatten(1).amax(dim=1) > 0
            probs = self.classifier(feats, text, masks=[soft], logit_scale=scale)["probs"]
            out.append(torch.where(covered[:, None], probs, torch.zeros_like(probs)).cpu())
        return torch.cat(out).float()


def _stack_records(
    records: list[dict[str, Any]], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A generator's records -> ``[K, H, W]`` bool masks and ``[K]`` float32 predicted IoU."""
    h, w = size
    if not records:
        return np.zeros((0, h, w), dtype=bool), np.zeros(0, dtype=np.float32)
    masks = np.empty((len(records), h, w), dtype=bool)
    iou = np.ones(len(records), dtype=np.float32)
    for i, r in enumerate(records):
        seg = r.get("segmentation")
        if not isinstance(seg, np.ndarray) or seg.shape != (h, w):
            got = seg.shape if isinstance(seg, np.ndarray) else type(seg).__name__
            raise ValueError(
                f"mask generator record {i} has 'segmentation' {got}; expected an [{h}, {w}] "
                "bool array (SamAutomaticMaskGenerator with output_mode='binary_mask')."
            )
        masks[i] = seg
        if "predicted_iou" in r:
            iou[i] = float(r["predicted_iou"])
    return masks, iou
