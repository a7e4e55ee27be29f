"""Trident-style SAM refinement of a coarse semantic map, for any segmentor preset.

:class:`SAMRefiner` is a ``post_refiner`` of :class:`~ovdense.modeling.segmentors.Segmentor`:
``(images [B, 3, H, W] in [0, 1], probs [B, C, H, W]) -> probs [B, C, H, W]``. It follows the
SAM refinement of Trident's official code (github.com/YuHengsss/Trident: ``sam_refinement``,
``split_connected_regions`` and ``map_refinement_coarse`` in ``seg_utils/utils.py``; the call
in ``Trident.postprocess_result`` of ``trident.py``; defaults in ``configs/base_config.py``),
re-implemented here:

1. **Coarse map.** Labels ``argmax_c probs`` at the input size; labels (nearest) and
   probabilities (bilinear) downsampled by ``down_ratio`` (2) to ``(H // 2, W // 2)``. With
   ``coarse_thresh > 0`` the pixels whose top probability is below it are left unassigned.
2. **Prompts** (:func:`region_prompts`). For every class whose largest (downsampled)
   probability reaches ``coarse_thresh``: the 8-connected regions of its pixels with at least
   ``minimal_area`` (downsampled) pixels; each region gives one prompt: a positive point at the
   region's most probable pixel (first in raster order), its bounding box (inclusive pixel
   indices, as ``torchvision.ops.masks_to_boxes``), and a mask prompt shared by the class: its
   probability map resized to SAM's low-resolution mask input (longest side 256 for the official
   models), zero-padded, kept where ``> coarse_thresh`` and multiplied by ``mask_coeff``
   (0.005). Points and boxes are mapped to SAM's input frame from the downsampled frame.
3. **SAM.** One image embedding per image (segment-anything's ``SamPredictor.set_image``
   preprocessing: ``ResizeLongestSide`` of the ``uint8`` image, normalisation, padding), the
   prompts batched through the prompt encoder and mask decoder with ``multimask_output=False``,
   the low-resolution mask logits upsampled to the input size (``Sam.postprocess_masks``).
4. **Merge** (:func:`merge_sam_masks`). Prompts whose predicted IoU is ``> iou_thresh`` (0.8)
   are kept. For each class: the union of its kept masks (``logit > 0``) times the maximum over
   its kept prompts of ``sigmoid(logit) * probs[class]``. Pixels that no kept mask covers keep
   the coarse prediction (so do the regions whose prompt was rejected).

Deviations, because the contract is probabilities in / probabilities out (Trident returns a
label map): covered pixels get those per-class scores normalised to sum to one (their argmax
is Trident's label; the segmentor's thresholds and argmax then act on them), uncovered pixels
keep ``probs`` unchanged. Trident's extra max of its score maps with the coarse
probabilities over rejected regions changes scores only, never its labels, and is not
reproduced. The image is taken from ``images`` (``[0, 1]``, rounded to ``uint8``) instead of
re-read from disk, and runs in float32 (Trident: fp16 image encoder on GPU).

``attach_sam_refiner(segmentor, kind, checkpoint)`` mounts one on a built segmentor; in a config
``model.post_refiner = L(SAMRefiner)(kind="vit_b", checkpoint="/path/sam_vit_b_01ec64.pth")``
works for every preset (docs/methods.md#sam-refinement-trident).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import SAM_KINDS, build_sam, missing_checkpoint_message

if TYPE_CHECKING:
    from ..modeling.segmentors import Segmentor

__all__ = [
    "TRIDENT_DEFAULTS",
    "RegionPrompts",
    "SAMRefiner",
    "attach_sam_refiner",
    "coarse_maps",
    "merge_sam_masks",
    "region_prompts",
]

#: Trident's settings (configs/base_config.py; ``sam_mask_coff`` and ``down_ratio`` from
#: seg_utils/utils.py). Its per-dataset configs change ``coarse_thresh`` only: 0.05 (ADE20K,
#: COCO-Stuff), 0.10 (Cityscapes), 0.15 (Context59/60), 0.2 (VOC20/21), 0.25 (COCO-Object).
TRIDENT_DEFAULTS: dict[str, Any] = {
    "coarse_thresh": 0.2,
    "minimal_area": 225,
    "iou_thresh": 0.8,
    "mask_coeff": 0.005,
    "down_ratio": 2,
}


@dataclass
class RegionPrompts:
    """SAM prompts from the connected regions of a coarse map (one prompt per region).

    Attributes:
        classes: ``[N]`` int64, the class of each region.
        points: ``[N, 2]`` float ``(x, y)``: the region's most probable pixel, in the
            downsampled frame.
        boxes: ``[N, 4]`` float ``(x1, y1, x2, y2)``: the region's extreme pixel indices
            (inclusive), in the downsampled frame.
        regions: ``[N, h, w]`` bool, the regions.
        coarse_probs: ``[C, h, w]`` the downsampled class probabilities.
        coarse_size: ``(h, w)``, the downsampled frame.
    """

    classes: Tensor
    points: Tensor
    boxes: Tensor
    regions: Tensor
    coarse_probs: Tensor
    coarse_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.classes.shape[0])


def coarse_maps(probs: Tensor, down_ratio: int = 2) -> tuple[Tensor, Tensor]:
    """Trident's coarse map: labels ``argmax probs`` downsampled (nearest) and probabilities
    downsampled (bilinear, ``align_corners=False``) to ``(H // down_ratio, W // down_ratio)``
    (at least one pixel).

    Args:
        probs: ``[C, H, W]`` class probabilities.

    Returns:
        ``(labels [h, w] int64, probs [C, h, w])``.
    """
    labels = probs.argmax(dim=0)
    if down_ratio == 1:
        return labels, probs
    h, w = probs.shape[-2:]
    size = (max(1, h // down_ratio), max(1, w // down_ratio))
    small = F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return small, F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]


def region_prompts(
    probs: Tensor,
    coarse_thresh: float = TRIDENT_DEFAULTS["coarse_thresh"],
    minimal_area: int = TRIDENT_DEFAULTS["minimal_area"],
    down_ratio: int = TRIDENT_DEFAULTS["down_ratio"],
) -> RegionPrompts:
    """Trident's prompts from a coarse probability map (steps 1-2 of the module docstring).

    Args:
        probs: ``[C, H, W]`` class probabilities at the input size.
        coarse_thresh: pixels whose top probability is below it are unassigned (when ``> 0``),
            and classes whose largest probability is below it give no prompt.
        minimal_area: smallest region, in downsampled pixels.
        down_ratio: the downsampling of the map before the regions are found.
    """
    from scipy import ndimage

    labels, small = coarse_maps(probs, down_ratio)
    num_classes = small.shape[0]
    if coarse_thresh > 0:
        labels = torch.where(small.amax(dim=0) < coarse_thresh, num_classes, labels)
    labels_np = labels.cpu().numpy()
    class_max = small.amax(dim=(1, 2)).tolist()
    small_cpu = small.detach().float().cpu()
    classes: list[int] = []
    points: list[tuple[float, float]] = []
    boxes: list[tuple[float, float, float, float]] = []
    regions: list[np.ndarray] = []
    eight = np.ones((3, 3), dtype=bool)
    for c in range(num_classes):
        if class_max[c] < coarse_thresh:
            continue
        mask = labels_np == c
        if not mask.any():
            continue
        comp, n = ndimage.label(mask, structure=eight)
        areas = np.bincount(comp.ravel(), minlength=n + 1)
        for r, box in enumerate(ndimage.find_objects(comp), start=1):
            if box is None or areas[r] < minimal_area:
                continue
            region = comp == r
            ys, xs = box
            local = torch.from_numpy(region[ys, xs]) * small_cpu[c, ys, xs]
            y, x = divmod(int(local.flatten().argmax()), local.shape[1])
            classes.append(c)
            points.append((float(x + xs.start), float(y + ys.start)))
            boxes.append((float(xs.start), float(ys.start), float(xs.stop - 1), float(ys.stop - 1)))
            regions.append(region)
    h, w = labels_np.shape
    return RegionPrompts(
        classes=torch.tensor(classes, dtype=torch.long),
        points=torch.tensor(points, dtype=torch.float32).reshape(-1, 2),
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        regions=(
            torch.from_numpy(np.stack(regions))
            if regions
            else torch.zeros((0, h, w), dtype=torch.bool)
        ),
        coarse_probs=small,
        coarse_size=(h, w),
    )


def merge_sam_masks(
    probs: Tensor,
    classes: Tensor,
    mask_logits: Tensor,
    iou: Tensor,
    iou_thresh: float = TRIDENT_DEFAULTS["iou_thresh"],
    mask_threshold: float = 0.0,
) -> Tensor:
    """Trident's merge of SAM's masks into the coarse map (step 4 of the module docstring).

    Args:
        probs: ``[C, H, W]`` coarse class probabilities.
        classes: ``[N]`` the class of each prompt.
        mask_logits: ``[N, H, W]`` SAM's mask logits at the input size.
        iou: ``[N]`` SAM's predicted IoU of each mask.
        iou_thresh: masks with a predicted IoU ``<=`` this are dropped.
        mask_threshold: a mask is ``logit > mask_threshold`` (SAM's 0).

    Returns:
        ``[C, H, W]``: where a kept mask covers a pixel, the per-class scores
        ``union_of_masks * max(sigmoid(logit) * probs)`` normalised to sum to one; elsewhere
        ``probs``.
    """
    keep = iou > iou_thresh
    if not bool(keep.any()):
        return probs
    scores = torch.zeros_like(probs)
    union = torch.zeros(probs.shape, dtype=torch.bool, device=probs.device)
    for i in torch.nonzero(keep).flatten().tolist():
        c = int(classes[i])
        logit = mask_logits[i].to(probs)
        scores[c] = torch.maximum(scores[c], torch.sigmoid(logit) * probs[c])
        union[c] |= logit > mask_threshold
    scores = scores * union
    total = scores.sum(dim=0, keepdim=True)
    covered = total > 0
    return torch.where(covered, scores / torch.where(covered, total, 1.0), probs)


class SAMRefiner(nn.Module):
    """Trident's SAM refinement as a segmentor ``post_refiner`` (see the module docstring).

    Args:
        kind: SAM size, ``"vit_b"`` (Trident's default), ``"vit_l"`` or ``"vit_h"``.
        checkpoint: the official SAM checkpoint of that size (``sam_vit_b_01ec64.pth``, ...).
        sam: a built segment-anything ``Sam`` instead of ``kind`` / ``checkpoint`` (e.g.
            :func:`~ovdense.sam.model.tiny_sam` in tests).
        coarse_thresh, minimal_area, down_ratio: the prompts (:func:`region_prompts`).
        iou_thresh: the kept masks (:func:`merge_sam_masks`).
        mask_coeff: the scale of the class-probability mask prompt (Trident's
            ``sam_mask_coff``).
        use_points, use_boxes, use_mask_prompt: which prompts SAM gets (all three in Trident).
        prompt_batch: prompts per mask-decoder call (the results do not depend on it).
        checkpoint_flag: how the missing-checkpoint message says to pass the file.

    Raises:
        ValueError: no ``checkpoint`` (nor ``sam``): one sentence naming the file to download.
    """

    #: segment-anything's ``Sam`` (untyped: its parts are used by attribute)
    sam: Any

    def __init__(
        self,
        kind: str = "vit_b",
        checkpoint: str | os.PathLike | None = None,
        *,
        sam: nn.Module | None = None,
        coarse_thresh: float = TRIDENT_DEFAULTS["coarse_thresh"],
        minimal_area: int = TRIDENT_DEFAULTS["minimal_area"],
        iou_thresh: float = TRIDENT_DEFAULTS["iou_thresh"],
        mask_coeff: float = TRIDENT_DEFAULTS["mask_coeff"],
        down_ratio: int = TRIDENT_DEFAULTS["down_ratio"],
        use_points: bool = True,
        use_boxes: bool = True,
        use_mask_prompt: bool = True,
        prompt_batch: int = 64,
        checkpoint_flag: str = "model.post_refiner.checkpoint=",
    ) -> None:
        super().__init__()
        if sam is None:
            if kind not in SAM_KINDS:
                raise ValueError(f"SAM kind must be one of {SAM_KINDS}, got {kind!r}.")
            if checkpoint is None:
                raise ValueError(missing_checkpoint_message(kind, checkpoint_flag))
            sam = build_sam(kind, checkpoint)
        if int(down_ratio) < 1 or int(prompt_batch) < 1 or int(minimal_area) < 0:
            raise ValueError("down_ratio and prompt_batch must be >= 1, minimal_area >= 0.")
        from segment_anything.utils.transforms import ResizeLongestSide

        self.sam = sam.eval()
        self.transform = ResizeLongestSide(int(self.sam.image_encoder.img_size))
        self.coarse_thresh = float(coarse_thresh)
        self.minimal_area = int(minimal_area)
        self.iou_thresh = float(iou_thresh)
        self.mask_coeff = float(mask_coeff)
        self.down_ratio = int(down_ratio)
        self.use_points = bool(use_points)
        self.use_boxes = bool(use_boxes)
        self.use_mask_prompt = bool(use_mask_prompt)
        self.prompt_batch = int(prompt_batch)

    @property
    def device(self) -> torch.device:
        return next(self.sam.parameters()).device

    @torch.no_grad()
    def embed(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """SAM image embeddings ``[B, E, h, w]`` of same-size images ``[B, 3, H, W]`` in
        ``[0, 1]`` (rounded to ``uint8`` and prepared as ``SamPredictor.set_image`` does), and
        the resized size ``(h', w')`` inside SAM's padded input."""
        u8 = images.detach().clamp(0, 1).mul(255).round().to(torch.uint8)
        u8_np = u8.permute(0, 2, 3, 1).cpu().numpy()
        x = torch.stack(
            [torch.from_numpy(self.transform.apply_image(im)).permute(2, 0, 1) for im in u8_np]
        )
        input_size = (int(x.shape[-2]), int(x.shape[-1]))
        x = self.sam.preprocess(x.to(self.device, torch.float32))
        return self.sam.image_encoder(x), input_size

    def mask_prompts(self, prompts: RegionPrompts, image_size: tuple[int, int]) -> Tensor:
        """Trident's mask prompt of each prompt's class, ``[N, 1, m, m]`` (``m``: SAM's
        low-resolution mask size): the downsampled class probabilities resized to the image's
        shape with longest side ``m``, zero-padded, ``mask_coeff * p`` where ``p >
        coarse_thresh``, else 0."""
        mh, mw = (int(s) for s in self.sam.prompt_encoder.mask_input_size)
        ph, pw = self.transform.get_preprocess_shape(image_size[0], image_size[1], max(mh, mw))
        maps = F.interpolate(
            prompts.coarse_probs[None].float(), size=(ph, pw), mode="bilinear", align_corners=False
        )
        maps = F.pad(maps, (0, mw - pw, 0, mh - ph), value=0.0)[0]
        maps = torch.where(maps > self.coarse_thresh, self.mask_coeff * maps, 0.0)
        return maps[prompts.classes.to(maps.device)][:, None]

    @torch.no_grad()
    def predict_masks(
        self,
        embedding: Tensor,
        prompts: RegionPrompts,
        input_size: tuple[int, int],
        image_size: tuple[int, int],
    ) -> tuple[Tensor, Tensor]:
        """SAM's masks for the prompts of one image (step 3 of the module docstring).

        Args:
            embedding: ``[1, E, h, w]`` the image's SAM embedding (:meth:`embed`).
            prompts: from :func:`region_prompts`.
            input_size: the image's size inside SAM's input (:meth:`embed`).
            image_size: ``(H, W)`` of the image.

        Returns:
            ``(mask_logits [N, H, W], iou [N])``.
        """
        dev = self.device
        frame = prompts.coarse_size
        coords = self.transform.apply_coords_torch(prompts.points.to(dev), frame)[:, None]
        boxes = self.transform.apply_boxes_torch(prompts.boxes.to(dev), frame)
        masks = self.mask_prompts(prompts, image_size).to(dev)
        ones = torch.ones(coords.shape[:2], device=dev)
        logits, ious = [], []
        for s in range(0, len(prompts), self.prompt_batch):
            e = s + self.prompt_batch
            sparse, dense = self.sam.prompt_encoder(
                points=(coords[s:e], ones[s:e]) if self.use_points else None,
                boxes=boxes[s:e] if self.use_boxes else None,
                masks=masks[s:e] if self.use_mask_prompt else None,
            )
            low, iou = self.sam.mask_decoder(
                image_embeddings=embedding,
                image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            logits.append(self.sam.postprocess_masks(low, input_size, image_size)[:, 0])
            ious.append(iou[:, 0])
        return torch.cat(logits), torch.cat(ious)

    @torch.no_grad()
    def forward(self, images: Tensor, probs: Tensor) -> Tensor:
        """Refined class probabilities.

        Args:
            images: ``[B, 3, H, W]`` RGB in ``[0, 1]``.
            probs: ``[B, C, H, W]`` class probabilities at the same size.

        Returns:
            ``[B, C, H, W]`` (see :func:`merge_sam_masks`); an image without a kept mask keeps
            its ``probs``.
        """
        if images.ndim != 4 or probs.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"Expected images [B, 3, H, W] and probs [B, C, H, W], got "
                f"{tuple(images.shape)} and {tuple(probs.shape)}."
            )
        if images.shape[0] != probs.shape[0] or images.shape[-2:] != probs.shape[-2:]:
            raise ValueError(
                f"images {tuple(images.shape)} and probs {tuple(probs.shape)} differ in batch "
                "or size."
            )
        image_size = (int(probs.shape[-2]), int(probs.shape[-1]))
        all_prompts = [
            region_prompts(p, self.coarse_thresh, self.minimal_area, self.down_ratio) for p in probs
        ]
        todo = [i for i, pr in enumerate(all_prompts) if len(pr)]
        if not todo:
            return probs
        embeddings, input_size = self.embed(images[todo])
        out = probs.clone()
        for j, i in enumerate(todo):
            logits, iou = self.predict_masks(
                embeddings[j : j + 1], all_prompts[i], input_size, image_size
            )
            out[i] = merge_sam_masks(
                probs[i],
                all_prompts[i].classes.to(probs.device),
                logits.to(probs.device),
                iou.to(probs.device),
                self.iou_thresh,
                float(self.sam.mask_threshold),
            )
        return out

    def extra_repr(self) -> str:
        return (
            f"coarse_thresh={self.coarse_thresh}, minimal_area={self.minimal_area}, "
            f"iou_thresh={self.iou_thresh}, mask_coeff={self.mask_coeff}, "
            f"down_ratio={self.down_ratio}"
        )


def attach_sam_refiner(
    segmentor: Segmentor,
    kind: str = "vit_b",
    checkpoint: str | os.PathLike | None = None,
    *,
    sam: nn.Module | None = None,
    checkpoint_flag: str = "--sam-checkpoint",
    **options: Any,
) -> SAMRefiner:
    """Mount a :class:`SAMRefiner` on a built segmentor (its ``post_refiner``), on the
    segmentor's device; returns it. ``options``: :class:`SAMRefiner`'s settings.

    Raises:
        ValueError: no ``checkpoint`` (nor ``sam``): one sentence naming the file to download
            and ``checkpoint_flag``.
    """
    refiner = SAMRefiner(kind, checkpoint, sam=sam, checkpoint_flag=checkpoint_flag, **options)
    segmentor.post_refiner = refiner.to(segmentor.device)
    return refiner
