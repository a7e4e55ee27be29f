"""Training of CLIP-DINOiser's two convolutions (Wysoczańska et al., ECCV 2024;
docs/methods.md#training-the-heads).

CLIP (MaskCLIP backbone) and DINO are frozen; only :class:`CLIPDINOiserHead` trains:

* ``loss_corr``: ``BCE-with-logits(clamp(corr_student, min=0), [corr_dino >= γ])`` over all
  patch pairs, ``corr_student`` = :meth:`CLIPDINOiserHead.correlations` of the ``ln_2`` output
  of CLIP block −3, ``corr_dino`` = cosine of DINO's last-block *value* features (patch tokens).
* ``loss_bkg``: ``BCE-with-logits(bkg_decoder(normalise(feats)), [FOUND saliency > 0.5])``,
  the saliency from :class:`~ovdense.modeling.refiners.found.FOUNDSaliency`.

Grids: the targets live on the CLIP grid. DINO features (``[B, C, dh, dw]``) are resized
(bilinear, ``align_corners=False``) to the CLIP grid *before* their cosine is taken; the FOUND
saliency map is resized the same way and then thresholded at 0.5. With the paper's setting
(448 px, CLIP ViT-B/16 and DINO ViT-B/16: both 28 x 28) nothing is resized.

Padding: :class:`~ovdense.data.images.ImageFolderDataset` pads each image to a square. When the
batch has ``valid_size`` only cells whose centre lies on the image content enter the losses
(pairs of such cells for ``loss_corr``); both losses are means over those terms.

Batches are those of :class:`~ovdense.data.images.ImageFolderDataset` (``image`` ``[B, 3, S, S]``
in ``[0, 1]``, optionally ``valid_size`` ``[B, 2]``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...utils.io import atomic_write
from ..backbones.vfm import TimmViTFeatures
from ..refiners.clip_dinoiser import CLIPDINOiserHead
from ..refiners.found import FOUNDSaliency
from ..segmentors.clip_dinoiser import CLIPDINOiserBackbone

__all__ = ["CLIPDINOiserDistill", "masked_bce_with_logits"]

logger = logging.getLogger(__name__)


def masked_bce_with_logits(logits: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
    """``Σ w · BCE(logits, target) / Σ w`` (plain mean when ``weight`` is None)."""
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if weight is None:
        return loss.mean()
    weight = weight.to(loss.dtype).expand_as(loss)
    return (loss * weight).sum() / weight.sum().clamp_min(1.0)


class CLIPDINOiserDistill(nn.Module):
    """CLIP-DINOiser head training; ``forward(batch)`` returns ``{"loss_corr", "loss_bkg"}``
    for :class:`~ovdense.engine.Trainer`.

    Args:
        clip: an open_clip model (or its ViT tower). Only the image tower is kept, frozen.
        teacher: the DINO wrapper giving the correlation target (its last-block *values* are
            used whatever its ``feature``), e.g. ``build_vfm("dino_vitb16")``; frozen.
        found: the FOUND saliency model; ``None`` runs FOUND on ``teacher`` itself (same
            forward pass: CLS attention and keys of its last block).
        proj_dim: channels of ``obj_proj`` (256 as released).
        gamma: correlation threshold γ of the target (and of the head's pooling).
        feature_block: CLIP block whose ``ln_2`` output feeds the head (−3).
        corr_lr, bkg_lr: learning rates of ``obj_proj`` and ``bkg_decoder`` (see
            :meth:`param_groups`; the optimizer's own ``lr`` is then unused).
        saliency_threshold: FOUND saliency above it is the "salient" target (0.5).

    Checkpoints: :meth:`state_dict` holds the head only (``head.*``): CLIP and DINO are frozen
    and rebuilt from the config, so a resumed run is identical without saving them.
    """

    def __init__(
        self,
        clip: nn.Module,
        teacher: TimmViTFeatures,
        found: FOUNDSaliency | None = None,
        proj_dim: int = 256,
        gamma: float = 0.2,
        feature_block: int = -3,
        corr_lr: float = 5e-5,
        bkg_lr: float = 1e-2,
        saliency_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if not isinstance(teacher, TimmViTFeatures):
            raise TypeError(
                "teacher must be a timm DINO wrapper such as build_vfm('dino_vitb16'), got "
                f"{type(teacher).__name__}."
            )
        visual = getattr(clip, "visual", clip)  # the text tower is never a submodule
        self.backbone = CLIPDINOiserBackbone(visual, feature_block=feature_block)
        self.teacher = teacher
        self.found = found
        self.head = CLIPDINOiserHead(int(self.backbone.width), proj_dim=proj_dim, gamma=gamma)
        self.gamma = float(gamma)
        self.corr_lr = float(corr_lr)
        self.bkg_lr = float(bkg_lr)
        self.saliency_threshold = float(saliency_threshold)
        self._found_on_teacher = FOUNDSaliency(teacher) if found is None else None
        for m in self._frozen():
            m.requires_grad_(False).eval()

    def _frozen(self) -> Iterator[nn.Module]:
        yield self.backbone
        yield self.teacher
        if self.found is not None:
            yield self.found
        if self._found_on_teacher is not None:
            yield self._found_on_teacher

    def train(self, mode: bool = True) -> CLIPDINOiserDistill:
        """Set the head's mode; CLIP, DINO and FOUND always stay in eval mode."""
        super().train(mode)
        for m in self._frozen():
            m.eval()
        return self

    # -- checkpoints: the head only ---------------------------------------------------------
    def state_dict(  # type: ignore[override]
        self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False
    ) -> dict[str, Any]:
        """The trainable head's state, keys ``head.obj_proj.weight`` etc. (frozen parts are
        rebuilt from the config, not saved)."""
        return self.head.state_dict(
            destination=destination, prefix=prefix + "head.", keep_vars=keep_vars
        )

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load a :meth:`state_dict` (``head.*`` keys; anything else is an error when
        ``strict``)."""
        head = {k[5:]: v for k, v in state_dict.items() if k.startswith("head.")}
        extra = [k for k in state_dict if not k.startswith("head.")]
        if strict and extra:
            raise RuntimeError(
                f"Unexpected keys {extra[:5]} for CLIPDINOiserDistill, which saves only its head "
                "('head.*'); was this checkpoint written by another model?"
            )
        return self.head.load_state_dict(head, strict=strict, assign=assign)

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups: ``obj_proj`` at ``corr_lr``, ``bkg_decoder`` at ``bkg_lr``
        (read by :class:`~ovdense.engine.Trainer`)."""
        return [
            {"params": list(self.head.obj_proj.parameters()), "lr": self.corr_lr},
            {"params": list(self.head.bkg_decoder.parameters()), "lr": self.bkg_lr},
        ]

    # -- targets ----------------------------------------------------------------------------
    @torch.no_grad()
    def clip_features(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Block −3 ``ln_2`` output ``[B, C, gh, gw]`` of the frozen CLIP and its grid."""
        _, feats, grid = self.backbone.block_features(self.backbone.normalize(images))
        return feats, grid

    @staticmethod
    def _resize(x: Tensor, grid: tuple[int, int]) -> Tensor:
        if tuple(x.shape[-2:]) == tuple(grid):
            return x
        return F.interpolate(x, size=grid, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def teacher_targets(self, images: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """DINO correlation and FOUND saliency on the CLIP grid.

        Args:
            images: ``[B, 3, H, W]`` in ``[0, 1]``.
            grid: the CLIP grid ``(gh, gw)``.

        Returns:
            ``(corr [B, N, N], saliency [B, 1, gh, gw])``: cosine of the (resized) DINO values
            and the (resized) FOUND saliency, both float; ``N = gh * gw``.
        """
        out = self.teacher.last_block(images)
        values = self._resize(out.to_map("value").float(), grid)
        z = F.normalize(values, dim=1).flatten(2)  # [B, C, N]
        corr = z.transpose(1, 2) @ z
        if self.found is None:
            assert self._found_on_teacher is not None
            sal = self._found_on_teacher.from_last_block(out)
        else:
            sal = self.found(images)
        return corr, self._resize(sal.float(), grid)

    @staticmethod
    def valid_cells(
        batch: Mapping[str, Any], grid: tuple[int, int], size: tuple[int, int]
    ) -> Tensor | None:
        """``[B, N]`` bool: cells whose centre is on the image content (``valid_size``), or
        ``None`` when the batch has no ``valid_size``."""
        valid = batch.get("valid_size")
        if valid is None:
            return None
        valid = torch.as_tensor(valid)
        gh, gw = grid
        ys = (torch.arange(gh, dtype=torch.float64) + 0.5) * (size[0] / gh)
        xs = (torch.arange(gw, dtype=torch.float64) + 0.5) * (size[1] / gw)
        inside_y = ys[None] < valid[:, :1].double().cpu()  # [B, gh]
        inside_x = xs[None] < valid[:, 1:2].double().cpu()  # [B, gw]
        return (inside_y[:, :, None] & inside_x[:, None, :]).flatten(1)

    # -- loss ---------------------------------------------------------------------------------
    def losses(
        self, feats: Tensor, corr_t: Tensor, sal_t: Tensor, valid: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The two losses from the CLIP features and the teacher targets.

        Args:
            feats: ``[B, C, gh, gw]`` block −3 ``ln_2`` output.
            corr_t: ``[B, N, N]`` teacher correlations (thresholded at γ here).
            sal_t: ``[B, 1, gh, gw]`` saliency (thresholded at ``saliency_threshold`` here).
            valid: ``[B, N]`` bool cells entering the losses, or ``None`` (all).
        """
        logits_corr = self.head.correlations(feats).clamp(min=0)
        target_corr = (corr_t >= self.gamma).to(logits_corr.dtype)
        logits_bkg = self.head.bkg_decoder(F.normalize(feats, dim=1))
        target_bkg = (sal_t > self.saliency_threshold).to(logits_bkg.dtype)
        w_corr = w_bkg = None
        if valid is not None:
            v = valid.to(feats.device)
            w_corr = v[:, :, None] & v[:, None, :]
            w_bkg = v.reshape(sal_t.shape)
        return {
            "loss_corr": masked_bce_with_logits(logits_corr, target_corr, w_corr),
            "loss_bkg": masked_bce_with_logits(logits_bkg, target_bkg, w_bkg),
        }

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Args:
            batch: ``image`` ``[B, 3, H, W]`` in ``[0, 1]``, optionally ``valid_size``
                ``[B, 2]``.

        Returns:
            ``{"loss_corr": scalar, "loss_bkg": scalar}``.
        """
        images: Tensor = batch["image"]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"batch['image'] must be [B, 3, H, W], got {tuple(images.shape)}.")
        feats, grid = self.clip_features(images)
        corr_t, sal_t = self.teacher_targets(images, grid)
        valid = self.valid_cells(batch, grid, (images.shape[-2], images.shape[-1]))
        return self.losses(feats.float(), corr_t, sal_t, valid)

    # -- export -------------------------------------------------------------------------------
    def official_state_dict(self) -> dict[str, Tensor]:
        """The head's four tensors under the release's names (CPU, detached)."""
        return {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()}

    def save_official_checkpoint(self, path: str | os.PathLike, epoch: int = 0) -> Path:
        """Write the head as the released ``last.pt``: ``{"epoch": epoch, "model_state_dict":
        {obj_proj.weight, obj_proj.bias, bkg_decoder.weight, bkg_decoder.bias}}`` (atomic);
        loadable with ``model.head_checkpoint=path`` in the ``clip_dinoiser`` preset.

        Returns:
            The written path.
        """
        path = Path(path)
        with atomic_write(path, suffix=path.suffix or ".tmp") as tmp:
            torch.save({"epoch": int(epoch), "model_state_dict": self.official_state_dict()}, tmp)
        logger.info("Wrote the CLIP-DINOiser head %s.", path)
        return path

    def extra_repr(self) -> str:
        return (
            f"gamma={self.gamma}, corr_lr={self.corr_lr}, bkg_lr={self.bkg_lr}, "
            f"found={'teacher' if self.found is None else 'separate'}"
        )
