"""Open-vocabulary box classification heads: text embeddings as the classifier weights.

Plain modules with tensor contracts, so that any two-stage detector can mount them (the
"library of heads" of ovdense):

- :class:`TextEmbeddingClassifier`: region features ``[N, D]`` x class embeddings ``[K, D]`` ->
  logits ``[N, 1 + K]`` (column 0 background, column ``k + 1`` class ``k``), cosine similarity
  times a learnable temperature, with a (learned or fixed) background embedding.
- :class:`TextBoxPredictor`: a drop-in for torchvision's ``FastRCNNPredictor``
  (``model.roi_heads.box_predictor``): the classifier above plus class-agnostic box deltas.
- :func:`geometric_ensemble` / :func:`clip_region_probs`: F-ViT's test-time combination of the
  detector's probabilities with the frozen CLIP's RoI probabilities.

Conventions read from F-ViT (CLIPSelf repository, ``F-ViT/models/fvit_head.py`` and its OV-COCO
configs): cosine logits times a learned temperature initialised at 50; the frozen CLIP's RoI
score is the softmax of ``75 x cosine`` between the RoIAlign (1x1) of the dense CLIP map and the
same text + background embeddings; the ensemble is ``p_det ** (1 - a) * p_clip ** a`` per column
with ``a = alpha = 0.1`` for base classes *and the background*, ``a = beta = 0.8`` for novel
classes (OV-LVIS: 50, 0.1, 0.6).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..text.encoder import ClassEmbeddings

__all__ = [
    "TextBoxPredictor",
    "TextEmbeddingClassifier",
    "class_embedding_matrix",
    "clip_region_probs",
    "geometric_ensemble",
]


def class_embedding_matrix(class_embeds: ClassEmbeddings | Tensor) -> Tensor:
    """One L2-normalised embedding per class, ``[K, D]``.

    A ``[K, D]`` tensor is normalised as is; :class:`ClassEmbeddings` with several names per
    class (synonyms) get the normalised mean of their names' embeddings.
    """
    if isinstance(class_embeds, ClassEmbeddings):
        emb, idx, k = class_embeds.embeds, class_embeds.name_to_class, class_embeds.num_classes
        if emb.shape[0] != k:
            summed = emb.new_zeros(k, emb.shape[1]).index_add_(0, idx.to(emb.device), emb)
            emb = summed
        return F.normalize(emb.float(), dim=-1)
    if not isinstance(class_embeds, Tensor) or class_embeds.ndim != 2:
        shape = tuple(class_embeds.shape) if isinstance(class_embeds, Tensor) else class_embeds
        raise ValueError(f"class_embeds must be a [K, D] tensor or ClassEmbeddings, got {shape}.")
    return F.normalize(class_embeds.float(), dim=-1)


class TextEmbeddingClassifier(nn.Module):
    """Cosine classifier against text embeddings, with a background embedding.

    ``logits[n] = temperature * [cos(x[n], bg), cos(x[n], e_0), ..., cos(x[n], e_{K-1})]``.

    Args:
        embed_dim: ``D``, the text-embedding dimension.
        in_features: when given (and not ``D``), a linear projection ``in_features -> D`` is
            applied to the region features first.
        temperature: initial (or fixed) logit multiplier (F-ViT: 50, learned).
        learn_temperature: learn the temperature (a scalar parameter) or keep it fixed.
        background_embed: ``[D]`` initial background embedding (e.g. the text embedding of
            ``"background"``, F-ViT's choice); default a random unit vector.
        learn_background: learn the background embedding (F-ViT's OV-COCO configs keep the
            text one fixed, ``learn_bg=False``; OV-LVIS learns it).
    """

    def __init__(
        self,
        embed_dim: int,
        in_features: int | None = None,
        temperature: float = 50.0,
        learn_temperature: bool = True,
        background_embed: Tensor | None = None,
        learn_background: bool = True,
    ) -> None:
        super().__init__()
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}.")
        self.embed_dim = int(embed_dim)
        self.proj: nn.Module = (
            nn.Linear(in_features, embed_dim)
            if in_features is not None and in_features != embed_dim
            else nn.Identity()
        )
        t = torch.tensor(float(temperature))
        if learn_temperature:
            self.temperature = nn.Parameter(t)
        else:
            self.register_buffer("temperature", t)
        if background_embed is None:
            g = torch.Generator().manual_seed(0)
            bg = torch.randn(embed_dim, generator=g)
        else:
            bg = background_embed.detach().float().reshape(-1).clone()
            if bg.shape[0] != embed_dim:
                raise ValueError(
                    f"background_embed has {bg.shape[0]} dims, the classifier {embed_dim}."
                )
        bg = F.normalize(bg, dim=0)
        if learn_background:
            self.background = nn.Parameter(bg)
        else:
            self.register_buffer("background", bg)

    def weights(self, class_embeds: ClassEmbeddings | Tensor) -> Tensor:
        """``[1 + K, D]`` normalised classifier weights: background, then the classes."""
        emb = class_embedding_matrix(class_embeds).to(self.background.device)
        if emb.shape[1] != self.embed_dim:
            raise ValueError(
                f"Class embeddings have {emb.shape[1]} dims, the classifier {self.embed_dim}: "
                "the text tower does not match."
            )
        return torch.cat([F.normalize(self.background, dim=0)[None], emb.to(self.background)])

    def forward(self, x: Tensor, class_embeds: ClassEmbeddings | Tensor) -> Tensor:
        """Args:
            x: ``[N, in_features]`` region features (``[N, D]`` without a projection).
            class_embeds: ``[K, D]`` class embeddings (normalised here) or ClassEmbeddings.

        Returns:
            ``[N, 1 + K]`` logits, background in column 0.
        """
        feats = F.normalize(self.proj(x.flatten(1)), dim=-1)
        return self.temperature * feats @ self.weights(class_embeds).T


def clip_region_probs(region_feats: Tensor, weights: Tensor, temperature: float = 75.0) -> Tensor:
    """F-ViT's frozen-CLIP region score: ``softmax(temperature * cos(region, weights))``.

    Args:
        region_feats: ``[N, D]`` pooled CLIP features (normalised here).
        weights: ``[1 + K, D]`` normalised classifier weights (background first), see
            :meth:`TextEmbeddingClassifier.weights`.
        temperature: F-ViT: 75 (OV-COCO), 50 (OV-LVIS).

    Returns:
        ``[N, 1 + K]`` probabilities.
    """
    feats = F.normalize(region_feats.float(), dim=-1)
    return (temperature * feats @ weights.float().T).softmax(dim=-1)


def geometric_ensemble(
    det_probs: Tensor,
    clip_probs: Tensor,
    is_base: Tensor,
    alpha: float = 0.1,
    beta: float = 0.8,
) -> Tensor:
    """F-ViT's test-time ensemble, column by column (background in column 0):

    ``p = p_det ** (1 - alpha) * p_clip ** alpha`` for the background and the base classes,
    ``p = p_det ** (1 - beta) * p_clip ** beta`` for the novel ones.

    Args:
        det_probs: ``[N, 1 + K]`` detector probabilities.
        clip_probs: ``[N, 1 + K]`` frozen-CLIP probabilities.
        is_base: ``[K]`` bool, the classes the detector was trained on.
        alpha: CLIP weight for base classes (F-ViT: 0.1).
        beta: CLIP weight for novel classes (F-ViT: 0.8 OV-COCO, 0.6 OV-LVIS).

    Returns:
        ``[N, 1 + K]`` ensembled scores (not renormalised, as in F-ViT).
    """
    if det_probs.shape != clip_probs.shape or det_probs.shape[-1] != is_base.numel() + 1:
        raise ValueError(
            f"det_probs {tuple(det_probs.shape)} and clip_probs {tuple(clip_probs.shape)} must "
            f"both be [N, 1 + K] with K = {is_base.numel()} (is_base)."
        )
    base_col = torch.cat([is_base.new_ones(1), is_base.bool()]).to(det_probs.device)
    w = torch.where(
        base_col,
        torch.tensor(float(alpha), device=det_probs.device),
        torch.tensor(float(beta), device=det_probs.device),
    ).to(det_probs.dtype)
    return det_probs ** (1 - w) * clip_probs.to(det_probs) ** w


class TextBoxPredictor(nn.Module):
    """torchvision-compatible box predictor whose classifier is a vocabulary of text embeddings.

    Drop-in for ``FastRCNNPredictor`` (``model.roi_heads.box_predictor = TextBoxPredictor(...)``)
    in any torchvision Faster / Mask R-CNN: ``forward(x [N, C, ...]) -> (logits [N, 1 + K],
    deltas [N, 4 (1 + K)])``, background in column 0 as torchvision expects. The box regression
    is class-agnostic (one ``[N, 4]`` set of deltas, repeated for every column so that
    torchvision's loss and post-processing use it unchanged).

    The vocabulary is not part of the model: set it with :meth:`set_vocabulary` (training
    labels ``1..K`` index it) or for a block with ``with predictor.vocabulary(embeds): ...``.

    Args:
        in_channels: box-head feature size (torchvision's ``TwoMLPHead``: 1024).
        embed_dim: text-embedding dimension ``D``.
        temperature, learn_temperature, background_embed, learn_background: see
            :class:`TextEmbeddingClassifier`.
    """

    def __init__(
        self,
        in_channels: int,
        embed_dim: int,
        temperature: float = 50.0,
        learn_temperature: bool = True,
        background_embed: Tensor | None = None,
        learn_background: bool = True,
    ) -> None:
        super().__init__()
        self.classifier = TextEmbeddingClassifier(
            embed_dim,
            in_features=in_channels,
            temperature=temperature,
            learn_temperature=learn_temperature,
            background_embed=background_embed,
            learn_background=learn_background,
        )
        self.bbox_pred = nn.Linear(in_channels, 4)
        self.class_embeds: Tensor | None = None

    def set_vocabulary(self, class_embeds: ClassEmbeddings | Tensor | None) -> None:
        """Use these ``K`` classes (``[K, D]`` or ClassEmbeddings) from now on."""
        self.class_embeds = None if class_embeds is None else class_embedding_matrix(class_embeds)

    @contextmanager
    def vocabulary(self, class_embeds: ClassEmbeddings | Tensor) -> Iterator[None]:
        """Use these classes inside the ``with`` block, then restore the previous ones."""
        saved = self.class_embeds
        self.set_vocabulary(class_embeds)
        try:
            yield
        finally:
            self.class_embeds = saved

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.class_embeds is None:
            raise RuntimeError(
                "A vocabulary must be set with .set_vocabulary(class_embeds) before the box "
                "predictor runs."
            )
        x = x.flatten(1)
        logits = self.classifier(x, self.class_embeds.to(x.device))
        deltas = self.bbox_pred(x).repeat(1, logits.shape[1])
        return logits, deltas
