"""Contrastive image-text training of an open_clip model (the CLIP objective).

Used to train the tiny CLIP of the shapes world (``tools/train_tiny_clip.py``); any open_clip
model and any dataset yielding ``image`` + ``caption`` works with the training engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils.io import atomic_write

__all__ = ["ContrastiveCLIP", "clip_contrastive_loss"]


def clip_contrastive_loss(image: Tensor, text: Tensor, logit_scale: Tensor) -> Tensor:
    """The symmetric InfoNCE loss of CLIP.

    Args:
        image: ``[N, D]`` L2-normalised image embeddings.
        text: ``[N, D]`` L2-normalised text embeddings; row ``i`` matches image ``i``.
        logit_scale: Scalar temperature (already exponentiated).

    Returns:
        ``(CE(logits, arange) + CE(logits.T, arange)) / 2`` with ``logits = scale * I @ T.T``.
    """
    logits = logit_scale * image @ text.t()
    target = torch.arange(image.shape[0], device=image.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def _gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` over all processes, keeping the gradient of the local part."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


class ContrastiveCLIP(nn.Module):
    """Train a whole open_clip model with the CLIP loss.

    Args:
        clip: An open_clip model (from :func:`~ovdense.modeling.clip.load_clip`); it must carry
            ``ovdense_tokenizer`` (``load_clip`` sets it).
        max_logit_scale: The learned temperature is clamped to ``log(max_logit_scale)`` as in
            CLIP.

    ``forward(batch)`` takes ``image`` (``float [B, 3, H, W]`` in ``[0, 1]``) and ``caption``
    (``list[str]`` of length ``B``) and returns ``{"loss_contrastive": scalar}``. Under
    ``torchrun`` the embeddings of all processes form the negatives (gathered, local gradient).
    """

    def __init__(self, clip: nn.Module, max_logit_scale: float = 100.0) -> None:
        super().__init__()
        if not hasattr(clip, "ovdense_tokenizer"):
            raise TypeError("ContrastiveCLIP needs a model from ovdense.modeling.load_clip.")
        model: Any = clip  # an open_clip model (untyped): read by name
        self.clip = model
        self.tokenizer: Callable[[list[str]], Tensor] = model.ovdense_tokenizer
        self.max_log_scale = float(torch.log(torch.tensor(max_logit_scale)))
        cfg = getattr(clip.visual, "preprocess_cfg", {}) or {}
        mean = cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
        std = cfg.get("std", (0.26862954, 0.26130258, 0.27577711))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        images = batch["image"].to(self.mean.device)
        captions = list(batch["caption"])
        if len(captions) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(captions)} captions.")
        tokens = self.tokenizer(captions).to(images.device)
        image = F.normalize(self.clip.encode_image((images - self.mean) / self.std), dim=-1)
        text = F.normalize(self.clip.encode_text(tokens), dim=-1)
        with torch.no_grad():
            self.clip.logit_scale.clamp_(0, self.max_log_scale)
        loss = clip_contrastive_loss(_gather(image), _gather(text), self.clip.logit_scale.exp())
        return {"loss_contrastive": loss}

    def save_open_clip_checkpoint(
        self, path: str | os.PathLike, dtype: torch.dtype = torch.float32
    ) -> Path:
        """Write the model's ``state_dict`` (cast to ``dtype``) as an open_clip checkpoint,
        readable by ``load_clip(model_name, checkpoint=path)``. Written atomically."""
        state = {
            k: (v.to(dtype) if v.is_floating_point() else v)
            for k, v in self.clip.state_dict().items()
        }
        with atomic_write(path) as tmp:
            torch.save(state, tmp)
        return Path(path)
