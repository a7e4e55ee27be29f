"""Image-level zero-shot classification (CLIP's own task), e.g. to check a CLIP's weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..modeling.heads import max_over_synonyms
from ..modeling.text import TextEncoder, Vocabulary

__all__ = ["zero_shot_logits", "accuracy_by_group"]


@torch.no_grad()
def zero_shot_logits(
    clip: nn.Module,
    images: Tensor,
    vocabulary: Vocabulary | Sequence[str | Sequence[str]],
    templates: str | Sequence[str] = "openai_imagenet",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 256,
) -> Tensor:
    """Cosine similarities of whole images to every class (max over each class's synonyms).

    Args:
        clip: An open_clip model (from :func:`~ovdense.modeling.clip.load_clip`).
        images: ``float [N, 3, H, W]`` in ``[0, 1]`` at the tower's input size.
        vocabulary: The classes.
        templates: Prompt templates (a set name or format strings).
        mean, std: Normalisation; default: the tower's ``preprocess_cfg`` (OpenAI's values).
        batch_size: Images per forward pass.

    Returns:
        ``[N, K]`` cosine similarities, ``K`` = number of classes.
    """
    model: Any = clip  # an open_clip model (untyped)
    vocab = Vocabulary.coerce(vocabulary)
    emb = TextEncoder(clip, templates=templates, progress=False)(vocab)
    cfg = getattr(clip.visual, "preprocess_cfg", {}) or {}
    device = next(clip.parameters()).device
    m = torch.tensor(mean or cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), device=device)
    s = torch.tensor(std or cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), device=device)
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        x = (x - m.view(1, 3, 1, 1)) / s.view(1, 3, 1, 1)
        feats = F.normalize(model.encode_image(x).float(), dim=-1)
        out.append(max_over_synonyms(feats @ emb.embeds.t(), emb.name_to_class, emb.num_classes))
    return torch.cat(out)


def accuracy_by_group(
    pred: Tensor, target: Tensor, groups: Mapping[str, Sequence[int]] | None = None
) -> dict[str, dict[str, float]]:
    """Top-1 accuracy overall and per group of target classes.

    Args:
        pred: ``[N]`` predicted class indices.
        target: ``[N]`` true class indices.
        groups: Optional ``{group: class indices}``; each group counts the samples whose target
            is one of its classes.

    Returns:
        ``{"all": {"acc": %, "n": count}, <group>: {...}}``; ``acc`` is NaN for an empty group.
    """
    result = {"all": _acc(pred, target, torch.ones_like(target, dtype=torch.bool))}
    for name, classes in (groups or {}).items():
        sel = torch.isin(target, torch.as_tensor(list(classes), dtype=target.dtype))
        result[name] = _acc(pred, target, sel)
    return result


def _acc(pred: Tensor, target: Tensor, sel: Tensor) -> dict[str, float]:
    n = int(sel.sum())
    acc = 100.0 * float((pred[sel] == target[sel]).float().mean()) if n else float("nan")
    return {"acc": acc, "n": n}
