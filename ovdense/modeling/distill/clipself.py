"""CLIPSelf (Wu et al., ICLR 2024): dense self-distillation of a CLIP ViT.

The teacher is a frozen copy of the image tower applied to image **crops** (resized to
``crop_size``); its normalised global embedding is the target. The student is the same tower
(trainable) applied to the whole image; its region feature is the RoIAlign of its dense map
over the crop box, L2-normalised. ``loss = mean(1 - cos(student, teacher))`` over all regions.

Regions are a ``m x n`` grid over each image (the paper's "image patches"; ``(m, n)`` drawn per
image with torch's global RNG, so a resumed run continues exactly) or boxes from a COCO-format
proposals JSON ("region proposals"). Batches come from
:class:`~ovdense.data.images.ImageFolderDataset` (``image`` in ``[0, 1]``, ``valid_size``,
``scale``, ``path``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn
from torchvision.ops import roi_align

from ...utils.io import atomic_write
from ..backbones.attention import AttentionStrategy
from ..backbones.clip_vit import dense_backbone_for
from ..backbones.eva_vit import is_eva_tower

__all__ = ["CLIPSelf", "load_proposals"]

logger = logging.getLogger(__name__)


def load_proposals(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read COCO-format boxes: ``images`` (``id``, ``file_name``) and ``annotations``
    (``image_id``, ``bbox`` = ``[x, y, w, h]`` in original pixels).

    Returns:
        Boxes per image file name (base name) as ``[K, 4]`` float ``x0, y0, x1, y1``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not COCO-format JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Proposals file not found: '{path}'.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {img["id"]: Path(str(img["file_name"])).name for img in data["images"]}
        boxes: dict[str, list[list[float]]] = defaultdict(list)
        for ann in data.get("annotations", []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes[names[ann["image_id"]]].append([x, y, x + w, y + h])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"'{path}' is not a COCO-format proposals file (needs 'images' with id/file_name and "
            f"'annotations' with image_id/bbox): {type(err).__name__}: {err}"
        ) from None
    return {name: torch.tensor(b, dtype=torch.float32) for name, b in boxes.items()}


def _grid_choices(grid: Sequence[int] | Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    items: list[Any] = list(grid)
    if len(items) == 2 and all(isinstance(v, int) for v in items):
        items = [items]
    out = []
    for g in items:
        m, n = (int(v) for v in g)
        if m < 1 or n < 1:
            raise ValueError(f"grid sizes must be >= 1, got {tuple(g)}.")
        out.append((m, n))
    if not out:
        raise ValueError("grid needs at least one (m, n) choice.")
    return out


class CLIPSelf(nn.Module):
    """CLIPSelf dense self-distillation (see the module doc); ``forward(batch)`` returns
    ``{"loss_clipself": loss}`` for :class:`~ovdense.engine.Trainer`.

    Args:
        clip: An open_clip model with a ViT image tower or an EVA02-CLIP tower (``EVA02-B-16``,
            ``EVA02-L-14-336``: the towers of CLIPSelf's released models; the dense features
            then come from :class:`~ovdense.modeling.backbones.eva_vit.DenseEVABackbone`). Its
            ``visual`` is the student and is trained in place; the text tower is kept (for
            :meth:`save_open_clip_checkpoint`) but is not a submodule, so it is neither trained
            nor moved to the device.
        trainable_blocks: Train the last N transformer blocks plus ``ln_post``/``proj`` (EVA:
            the trunk's ``norm``/``fc_norm``/``head`` and open_clip's ``head``; everything before
            is frozen); None trains the whole tower.
        grid: ``(m, n)``, or a list of ``(m, n)`` choices drawn per image.
        crop_size: Side of the teacher's input crops (any multiple of the patch size; position
            embeddings are interpolated).
        proposals: A COCO-format JSON of boxes per image file name (region mode); images
            without boxes fall back to the grid. Boxes are clipped to the image.
        strategy: Attention strategy of the student's last block (the teacher is vanilla).
        max_regions: Proposals per image (a random subset, torch's RNG, when there are more).
        roi_size: RoIAlign output side; the ``roi_size x roi_size`` bins are averaged (1: the
            box mean, with adaptive sampling).

    Raises:
        TypeError: ``clip`` has no open_clip ViT or EVA tower.
        ValueError: For invalid ``trainable_blocks``, ``grid``, ``crop_size`` or sizes.
    """

    def __init__(
        self,
        clip: nn.Module,
        trainable_blocks: int | None = None,
        grid: Sequence[int] | Sequence[Sequence[int]] = (2, 2),
        crop_size: int = 224,
        proposals: str | os.PathLike | None = None,
        strategy: str | AttentionStrategy = "vanilla",
        max_regions: int = 20,
        roi_size: int = 1,
    ) -> None:
        super().__init__()
        visual: Any = getattr(clip, "visual", None)
        if not isinstance(visual, VisionTransformer) and not is_eva_tower(visual):
            raise TypeError(
                "CLIPSelf needs an open_clip model with a ViT or EVA02 image tower (clip.visual), "
                f"got {type(clip).__name__}."
            )
        self._clip = (clip,)  # a tuple: not a submodule (text tower stays put, untrained)
        self.student = dense_backbone_for(clip, strategy=strategy)
        self.teacher = dense_backbone_for(copy.deepcopy(visual), strategy="vanilla")
        self.teacher.requires_grad_(False).eval()
        self.grids = _grid_choices(grid)
        self.crop_size = int(crop_size)
        if self.crop_size < self.student.patch_size:
            raise ValueError(
                f"crop_size ({crop_size}) is smaller than a {self.student.patch_size}-pixel patch."
            )
        if max_regions < 1 or roi_size < 1:
            raise ValueError(f"max_regions ({max_regions}) and roi_size ({roi_size}) must be >= 1.")
        self.max_regions = int(max_regions)
        self.roi_size = int(roi_size)
        self.proposals_path = None if proposals is None else str(proposals)
        self.proposals = None if proposals is None else load_proposals(proposals)
        self.trainable_blocks = trainable_blocks
        self._set_trainable(visual, trainable_blocks)

    @staticmethod
    def _set_trainable(visual: Any, trainable_blocks: int | None) -> None:
        visual.requires_grad_(True)
        if trainable_blocks is None:
            return
        if is_eva_tower(visual):
            blocks = visual.trunk.blocks
            post = [visual.trunk.norm, visual.trunk.fc_norm, visual.trunk.head, visual.head]
        else:
            blocks = visual.transformer.resblocks
            post = [visual.ln_post]
        if not 0 <= trainable_blocks <= len(blocks):
            raise ValueError(
                f"trainable_blocks must be None or in [0, {len(blocks)}], got {trainable_blocks}."
            )
        visual.requires_grad_(False)
        for blk in blocks[len(blocks) - trainable_blocks :]:
            blk.requires_grad_(True)
        for module in post:
            module.requires_grad_(True)
        if getattr(visual, "proj", None) is not None:
            visual.proj.requires_grad_(True)

    @property
    def clip(self) -> nn.Module:
        """The open_clip model whose image tower is the student."""
        return self._clip[0]

    def train(self, mode: bool = True) -> CLIPSelf:
        """Set the student's mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    # ----------------------------------------------------------------------------------------
    # Regions
    # ----------------------------------------------------------------------------------------

    def grid_boxes(self, valid_size: Tensor) -> Tensor:
        """An ``m x n`` grid over the image content, ``(m, n)`` drawn from ``self.grids``.

        Args:
            valid_size: ``[2]`` content ``(h, w)`` in pixels.

        Returns:
            ``[m * n, 4]`` float boxes ``x0, y0, x1, y1`` (row-major).
        """
        if len(self.grids) == 1:
            m, n = self.grids[0]
        else:
            m, n = self.grids[int(torch.randint(len(self.grids), (1,)))]
        h, w = float(valid_size[0]), float(valid_size[1])
        ys = torch.linspace(0.0, h, m + 1)
        xs = torch.linspace(0.0, w, n + 1)
        y0, x0 = torch.meshgrid(ys[:-1], xs[:-1], indexing="ij")
        y1, x1 = torch.meshgrid(ys[1:], xs[1:], indexing="ij")
        return torch.stack([x0, y0, x1, y1], dim=-1).reshape(-1, 4)

    def proposal_boxes(self, path: str, valid_size: Tensor, scale: float) -> Tensor | None:
        """The proposals of one image in image pixels, clipped to the content.

        Args:
            path: The image file (matched by base name).
            valid_size: ``[2]`` content ``(h, w)``.
            scale: Original -> image pixel factor.

        Returns:
            ``[K, 4]`` boxes (at most ``max_regions``), or None when the image has none.

        Raises:
            ValueError: A box is empty after clipping (names the image and the box).
        """
        assert self.proposals is not None
        boxes = self.proposals.get(Path(path).name)
        if boxes is None or len(boxes) == 0:
            return None
        if len(boxes) > self.max_regions:
            boxes = boxes[torch.randperm(len(boxes))[: self.max_regions]]
        h, w = float(valid_size[0]), float(valid_size[1])
        scaled = boxes * scale
        clipped = torch.stack(
            [
                scaled[:, 0].clamp(0, w),
                scaled[:, 1].clamp(0, h),
                scaled[:, 2].clamp(0, w),
                scaled[:, 3].clamp(0, h),
            ],
            dim=1,
        )
        empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
        if bool(empty.any()):
            bad = boxes[empty][0].tolist()
            raise ValueError(
                f"Proposal box {[round(v, 2) for v in bad]} (x0, y0, x1, y1 in original pixels) "
                f"of image '{path}' is empty after clipping to the image "
                f"({round(w / scale)}x{round(h / scale)} pixels); fix or drop it in "
                f"'{self.proposals_path}'."
            )
        return clipped

    def regions(self, batch: Mapping[str, Any]) -> Tensor:
        """Boxes of every image of the batch as ``[R, 5]`` (``batch_index, x0, y0, x1, y1``)."""
        images: Tensor = batch["image"]
        b, _, h, w = images.shape
        valid = batch.get("valid_size")
        if valid is None:
            valid = torch.tensor([[h, w]] * b)
        scales = batch.get("scale")
        paths = batch.get("path")
        out = []
        for i in range(b):
            boxes = None
            if self.proposals is not None:
                if paths is None:
                    raise KeyError("CLIPSelf with proposals needs batch['path'].")
                scale = 1.0 if scales is None else float(scales[i])
                boxes = self.proposal_boxes(paths[i], valid[i], scale)
            if boxes is None:
                boxes = self.grid_boxes(valid[i])
            idx = torch.full((len(boxes), 1), float(i))
            out.append(torch.cat([idx, boxes], dim=1))
        return torch.cat(out).to(images.device, images.dtype)

    # ----------------------------------------------------------------------------------------
    # Features and loss
    # ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def teacher_embeddings(self, images: Tensor, rois: Tensor) -> Tensor:
        """Teacher targets: crops resized to ``crop_size`` -> normalised global embeddings.

        Args:
            images: ``[B, 3, H, W]`` in ``[0, 1]``.
            rois: ``[R, 5]`` boxes in pixels.

        Returns:
            ``[R, D]`` L2-normalised embeddings (no gradient).
        """
        # RoIAlign with adaptive sampling averages the pixels of each output bin (antialiased
        # resize of the crop); normalisation commutes with it (per-channel affine).
        crops = roi_align(
            self.teacher.normalize(images),
            rois,
            output_size=self.crop_size,
            spatial_scale=1.0,
            sampling_ratio=-1,
            aligned=True,
        )
        return self.teacher(crops).global_embed

    def student_embeddings(self, images: Tensor, rois: Tensor) -> Tensor:
        """Student region features: RoIAlign of the dense map over each box, pooled.

        Args:
            images: ``[B, 3, H, W]`` in ``[0, 1]``.
            rois: ``[R, 5]`` boxes in pixels.

        Returns:
            ``[R, D]`` L2-normalised region features.
        """
        dense = self.student(self.student.normalize(images)).dense
        return self.pool_regions(dense, rois, images.shape[-1] / dense.shape[-1])

    def pool_regions(self, dense: Tensor, rois: Tensor, stride: float) -> Tensor:
        """RoIAlign ``[B, D, h, w]`` over ``[R, 5]`` pixel boxes -> ``[R, D]`` normalised."""
        pooled = roi_align(
            dense,
            rois.to(dense.dtype),
            output_size=self.roi_size,
            spatial_scale=1.0 / stride,
            sampling_ratio=-1,
            aligned=True,
        )
        return F.normalize(pooled.mean(dim=(-2, -1)), dim=-1)

    @staticmethod
    def distill_loss(student: Tensor, teacher: Tensor) -> Tensor:
        """``mean(1 - cos(student, teacher))`` over ``[R, D]`` pairs."""
        return (1.0 - F.cosine_similarity(student, teacher.to(student.dtype), dim=-1)).mean()

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Args:
            batch: ``image`` ``[B, 3, H, W]`` in ``[0, 1]`` and optionally ``valid_size``
                ``[B, 2]``, ``scale`` ``[B]``, ``path`` (see
                :func:`~ovdense.data.images.collate_images`).

        Returns:
            ``{"loss_clipself": scalar}``.
        """
        images: Tensor = batch["image"]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"batch['image'] must be [B, 3, H, W], got {tuple(images.shape)}.")
        rois = self.regions(batch)
        target = self.teacher_embeddings(images, rois)
        pred = self.student_embeddings(images, rois)
        return {"loss_clipself": self.distill_loss(pred, target)}

    # ----------------------------------------------------------------------------------------
    # Export
    # ----------------------------------------------------------------------------------------

    def save_open_clip_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write the student's full open_clip state dict (teacher excluded), atomically.

        Loadable with ``load_clip(model_name, checkpoint=path)`` or
        ``open_clip.create_model(model_name, pretrained=path)``. A ``.safetensors`` suffix
        writes safetensors, anything else ``torch.save``.

        Returns:
            The written path.
        """
        path = Path(path)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.clip.state_dict().items()}
        with atomic_write(path, suffix=path.suffix or ".tmp") as tmp:
            if path.suffix == ".safetensors":
                from safetensors.torch import save_file

                save_file({k: v.clone() for k, v in state.items()}, str(tmp))
            else:
                torch.save(state, tmp)
        logger.info("Wrote the open_clip checkpoint %s.", path)
        return path

    def extra_repr(self) -> str:
        return (
            f"grids={self.grids}, crop_size={self.crop_size}, "
            f"trainable_blocks={self.trainable_blocks}, proposals={self.proposals_path!r}"
        )
