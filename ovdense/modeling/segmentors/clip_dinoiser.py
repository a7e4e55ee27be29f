"""CLIP-DINOiser inference (Wysoczańska et al., ECCV 2024; REFERENCE §3).

MaskCLIP features pooled with the correlations of a light head on CLIP's block −3 tokens, plus a
saliency-based background rule. Everything else (short-side resize, sliding windows, cosine with
class embeddings, softmax, thresholds) is :class:`TrainingFreeSegmentor`'s.

Design:

* :class:`CLIPDINOiserBackbone` is a :class:`DenseCLIPBackbone` (strategy ``"maskclip"``) whose
  ``forward`` returns the *pooled* features as ``dense``, so the parent's ``encode_image`` and
  decoding run unchanged. It owns the :class:`CLIPDINOiserHead` (``backbone.head``).
* The per-window background maps are collected by the backbone while the parent's
  ``encode_image`` runs and stored in :class:`CLIPDINOiserFeatures` (an :class:`ImageFeatures`
  with a ``background`` field), window-major like ``dense``.
* Two decoding orders (``decode_order``, see docs/clip_dinoiser_protocol.md):

  - ``"paper"`` (default): the official evaluation's order. Per window, softmax at feature
    resolution, background rule at feature resolution (class 0's probability set to 1.0),
    window *probabilities* upsampled to the crop, averaged over overlapping windows, resized to
    the input size, argmax. Crops that are not a multiple of the patch size are padded with
    black pixels at the bottom / right, as the official code does.
  - ``"ovdense"``: the SCLIP-family order of :class:`TrainingFreeSegmentor`. Window *cosines*
    upsampled and averaged, resized to the input size, softmax there; the background rule at
    the input size on the averaged, upsampled saliency; crops truncated to whole patches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import DenseCLIPBackbone
from ..backbones.base import DenseFeatures
from ..heads import max_over_synonyms
from ..refiners.clip_dinoiser import (
    CHECKPOINT_HINT,
    CLIPDINOiserHead,
    read_clip_dinoiser_state_dict,
)
from ..text import BACKGROUND_NAMES, ClassEmbeddings, Vocabulary, is_background_class
from .training_free import ImageFeatures, SegmentationOutput, TrainingFreeSegmentor

__all__ = [
    "BACKGROUND_NAMES",
    "DECODE_ORDERS",
    "CLIPDINOiserBackbone",
    "CLIPDINOiserFeatures",
    "CLIPDINOiserSegmentor",
    "apply_background_rule",
]


#: Values of ``CLIPDINOiserSegmentor(decode_order=...)``.
DECODE_ORDERS = ("paper", "ovdense")
DecodeOrder = Literal["paper", "ovdense"]


def apply_background_rule(
    labels: Tensor,
    probs: Tensor,
    saliency: Tensor,
    delta: float,
    background_index: int = 0,
) -> Tensor:
    """CLIP-DINOiser's rule: pixels with ``max_c probs < delta`` *and* ``saliency < 0.5``
    become ``background_index``.

    Args:
        labels: ``[B, H, W]`` int64 labels (not modified).
        probs: ``[B, C, H, W]`` class probabilities.
        saliency: ``[B, 1, H, W]`` or ``[B, H, W]`` background-head sigmoid.
        delta: confidence bound (0.99 in the paper).
        background_index: the label given to those pixels.

    Returns:
        ``[B, H, W]`` new labels.
    """
    sal = saliency[:, 0] if saliency.ndim == 4 else saliency
    if sal.shape != labels.shape or probs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Shapes do not match: labels {tuple(labels.shape)}, probs {tuple(probs.shape)}, "
            f"saliency {tuple(saliency.shape)}."
        )
    mask = (probs.max(dim=1).values < delta) & (sal < 0.5)
    return torch.where(mask, torch.full_like(labels, background_index), labels)


@dataclass
class CLIPDINOiserFeatures(ImageFeatures):
    """:class:`ImageFeatures` plus the background head's output.

    Attributes:
        background: ``[num_windows * B, 1, gh, gw]`` window-major saliency (sigmoid), or
            ``None``.
    """

    background: Tensor | None = None


class CLIPDINOiserBackbone(DenseCLIPBackbone):
    """MaskCLIP backbone whose dense output is pooled by CLIP-DINOiser's correlations.

    A forward hook on ``resblocks[feature_block].ln_2`` captures the normalised tokens entering
    that block's MLP (``[B, 1 + N, C]``); the head turns them into correlations (pooling the
    unnormalised projected MaskCLIP features, then L2-normalised) and a saliency map.

    Args:
        clip: open_clip model or ViT tower (shared).
        head: the trained head, or ``None`` (``forward`` then refuses to run).
        feature_block: index of the block whose ``ln_2`` output feeds the head (−3).
        pad_to_patch: pad images whose height / width is not a multiple of the patch size at
            the bottom / right with black pixels (0 before normalisation) up to the next
            multiple, as the official code does (``make_input_divisible``); ``False``: the
            patch embedding drops the remainder.
    """

    def __init__(
        self,
        clip: nn.Module,
        head: CLIPDINOiserHead | None,
        feature_block: int = -3,
        pad_to_patch: bool = False,
    ) -> None:
        super().__init__(clip, strategy="maskclip", pos_interp="size")
        n = self.num_blocks
        j = feature_block + n if feature_block < 0 else feature_block
        if not 0 <= j < n - 1:
            raise ValueError(
                f"feature_block {feature_block} must be a block before the last one of this "
                f"{n}-block ViT."
            )
        if head is not None and head.width != self.width:
            raise ValueError(
                f"The CLIP-DINOiser head is for ViT width {head.width}, this ViT has width "
                f"{self.width}."
            )
        self.feature_block = j
        self.head = head
        self.pad_to_patch = bool(pad_to_patch)
        self._collect: list[Tensor] | None = None

    def pad_images(self, images: Tensor) -> Tensor:
        """``images`` (normalised) padded at the bottom / right to a multiple of the patch
        size with the normalised value of a black pixel (``-mean / std``); unchanged when
        already a multiple."""
        p = self.patch_size
        h, w = images.shape[-2:]
        ph, pw = (p - h % p) % p, (p - w % p) % p
        if not (ph or pw):
            return images
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device)
        out = (-mean / std).view(1, 3, 1, 1).expand(images.shape[0], 3, h + ph, w + pw).clone()
        out[:, :, :h, :w] = images
        return out

    def block_features(
        self, images: Tensor, extras: dict[str, Any] | None = None
    ) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """Last-block tokens and the hooked block features.

        Returns:
            ``(tokens [B, 1 + N, C], feats [B, C, gh, gw], grid)``: the MaskCLIP tokens before
            ``ln_post`` and the ``ln_2`` output of ``feature_block`` with CLS dropped.
        """
        captured: list[Tensor] = []
        ln_2 = self.visual.transformer.resblocks[self.feature_block].ln_2
        handle = ln_2.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            tokens, grid, _ = self.forward_tokens(images, extras)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(
                f"Expected one call of block {self.feature_block}'s ln_2, saw {len(captured)}."
            )
        x = captured[0]
        if not getattr(self.visual.transformer, "batch_first", True):
            x = x.transpose(0, 1)
        if x.shape[1] != 1 + grid[0] * grid[1]:
            raise RuntimeError(f"Hooked tokens {tuple(x.shape)} do not fit the grid {grid}.")
        return tokens, self._to_nchw(x, grid), grid

    def forward(self, images: Tensor, extras: dict[str, Any] | None = None) -> DenseFeatures:
        """Args:
            images: ``[B, 3, H, W]`` normalised with ``self.mean``/``self.std``.

        Returns:
            :class:`DenseFeatures`: ``dense`` ``[B, D, gh, gw]`` pooled and L2-normalised,
            ``intermediates["background"]`` ``[B, 1, gh, gw]`` saliency; with
            ``pad_to_patch`` the grid covers the padded image (``ceil(H / p)``).
        """
        if self.head is None:
            raise ValueError(
                "CLIP-DINOiser needs its trained head (a random one would be meaningless): "
                f"{CHECKPOINT_HINT}; set model.head_checkpoint=/path/to/last.pt."
            )
        if self.pad_to_patch:
            images = self.pad_images(images)
        tokens, feats, grid = self.block_features(images, extras)
        x = self.project(tokens)
        dense = x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, grid[0], grid[1])
        pooled = self.head.pool(dense, self.head.correlations(feats.to(dense.dtype)))
        background = self.head.background(feats)
        if self._collect is not None:
            self._collect.append(background.float())
        return DenseFeatures(
            dense=F.normalize(pooled, dim=1),
            stride=images.shape[-2] // grid[0],
            global_embed=F.normalize(x[:, 0], dim=-1),
            intermediates={"background": background},
        )


class CLIPDINOiserSegmentor(TrainingFreeSegmentor):
    """CLIP-DINOiser: MaskCLIP + correlation pooling + saliency background (inference).

    Args:
        clip: an open_clip model (OpenCLIP ViT-B-16 ``laion2b_s34b_b88k`` for the release).
        head_checkpoint: the released ``last.pt``, a converted head state dict, or a
            ``model_*.pt`` of ovdense's CLIP-DINOiser training (its head is read).
        head: a :class:`CLIPDINOiserHead` object instead of ``head_checkpoint`` (tests,
            training). With neither, the segmentor is built but refuses to run.
        feature_block: block whose ``ln_2`` output feeds the head (−3).
        gamma, delta: correlation threshold and background-rule confidence bound; used to build
            the head from ``head_checkpoint`` (a given ``head`` keeps its own values).
        background_rule: ``True``: apply the background rule (the vocabulary's class
            ``background_index`` must be named e.g. ``"background"``, see
            :data:`BACKGROUND_NAMES`); ``False``: never; ``None``: apply when that class has
            such a name; ``"force"``: apply, class ``background_index`` being the background
            whatever its names (a benchmark's background class given by other names, e.g.
            VOC21's 26 names under the unified class-name rule).
        decode_order: how window outputs become the image's labels (docs/
            clip_dinoiser_protocol.md has the official file / line of each step):

            * ``"paper"`` (default, because it reproduces the published evaluation): the order
              of the official code (``DinoCLIP_Infrencer`` on mmseg 0.27's ``slide_inference``).
              Per window at feature resolution: ``softmax(logit_scale * cos)`` (max over each
              class's names), then the background rule on those probabilities (where
              ``max < delta`` and saliency is not ``> 0.5``, class ``background_index``'s
              probability is set to 1.0, the others are kept); the window probability maps are
              upsampled (bilinear, ``align_corners=False``) to the crop, averaged where windows
              overlap, resized (bilinear) to the input size; argmax. Crops are padded to a
              multiple of the patch size with black pixels (official ``make_input_divisible``).
              ``probs`` of the output are those averaged maps (they sum to 1 except where the
              rule set class 0 to 1.0 in some window).
            * ``"ovdense"``: :class:`TrainingFreeSegmentor`'s order. Window cosines upsampled
              and averaged, resized to the input size, softmax there; the rule at the input size
              (top probability ``< delta`` and averaged, upsampled saliency ``< 0.5`` -> label
              ``background_index``); crops truncated to whole patches. Same labels as ``"paper"``
              when nothing is interpolated (one window, feature grid = output size);
              otherwise they differ near class boundaries and where the rule fires.

            Which order gives the better mIoU has not been measured on real benchmarks.
        templates, short_side, max_long_side, window, stride, window_batch_size, logit_scale,
        prob_thd, area_thd, background_index, pamr, precision, text_cache_dir: see
            :class:`TrainingFreeSegmentor`. The strategy is fixed to ``"maskclip"`` and the
            position embeddings are interpolated to the target size.

    The head lives at ``self.backbone.head`` (also ``self.dinoiser_head``); ``self.head`` stays
    the parent's cosine head.
    """

    def __init__(
        self,
        clip: nn.Module,
        head_checkpoint: str | os.PathLike | None = None,
        head: CLIPDINOiserHead | None = None,
        feature_block: int = -3,
        gamma: float = 0.2,
        delta: float = 0.99,
        background_rule: bool | str | None = None,
        decode_order: DecodeOrder = "paper",
        templates: str | Sequence[str] = "openai_imagenet",
        short_side: int | None = 448,
        max_long_side: int | None = 2048,
        window: int | None = 448,
        stride: int | None = 224,
        window_batch_size: int = 8,
        logit_scale: float = 100.0,
        prob_thd: float = 0.0,
        area_thd: float | None = None,
        background_index: int | None = None,
        pamr: nn.Module | None = None,
        precision: str = "fp32",
        text_cache_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(
            clip,
            strategy="maskclip",
            pos_interp="size",
            templates=templates,
            short_side=short_side,
            max_long_side=max_long_side,
            window=window,
            stride=stride,
            window_batch_size=window_batch_size,
            logit_scale=logit_scale,
            prob_thd=prob_thd,
            area_thd=area_thd,
            background_index=background_index,
            pamr=pamr,
            precision=precision,
            text_cache_dir=text_cache_dir,
        )
        if head is not None and head_checkpoint is not None:
            raise ValueError("Give either head or head_checkpoint, not both.")
        if head is None and head_checkpoint is not None:
            width = int(self.backbone.width)
            # the projection width comes from the file (256 in the release; a head trained by
            # ovdense may use another proj_dim)
            w = read_clip_dinoiser_state_dict(head_checkpoint)["obj_proj.weight"]
            proj_dim = int(w.shape[0]) if w.ndim == 4 else 256
            head = CLIPDINOiserHead(width, proj_dim=proj_dim, gamma=gamma, delta=delta)
            head.load_official(head_checkpoint)
        device = self.device
        self.backbone = CLIPDINOiserBackbone(clip, head, feature_block=feature_block).to(device)
        if background_rule not in (None, True, False, "force"):
            raise ValueError(
                f"background_rule must be None, True, False or 'force', got {background_rule!r}."
            )
        self.background_rule = background_rule
        self.decode_order = decode_order
        self.eval()

    @property
    def decode_order(self) -> DecodeOrder:
        """``"paper"`` or ``"ovdense"`` (see the class docstring); settable. It also sets
        ``backbone.pad_to_patch`` (``True`` for ``"paper"``), which acts on the next
        :meth:`encode_image`."""
        return self._decode_order

    @decode_order.setter
    def decode_order(self, value: DecodeOrder) -> None:
        if value not in DECODE_ORDERS:
            raise ValueError(f"decode_order must be one of {DECODE_ORDERS}, got {value!r}.")
        self._decode_order = value
        self.backbone.pad_to_patch = value == "paper"

    @property
    def dinoiser_head(self) -> CLIPDINOiserHead | None:
        """The correlation / background head (``None`` until one is given)."""
        return self.backbone.head

    # -- image side -----------------------------------------------------------------------
    @torch.no_grad()
    def encode_image(self, images: Tensor) -> CLIPDINOiserFeatures:
        """Pooled dense features and background maps of every window (see the parent)."""
        if self.dinoiser_head is None:
            raise ValueError(
                "CLIP-DINOiser needs its trained head (a random one would be meaningless): "
                f"{CHECKPOINT_HINT}; set model.head_checkpoint=/path/to/last.pt."
            )
        self.backbone._collect = []
        try:
            feats = super().encode_image(images)
            background = torch.cat(self.backbone._collect, dim=0)
        finally:
            self.backbone._collect = None
        base = {f.name: getattr(feats, f.name) for f in fields(ImageFeatures)}
        return CLIPDINOiserFeatures(**base, background=background)

    @torch.no_grad()
    def background_map(self, feats: CLIPDINOiserFeatures) -> Tensor:
        """Saliency at the input size ``[B, 1, H, W]``: window maps upsampled (bilinear) to
        their crops, averaged where windows overlap, then resized to the input size, as the
        logits are in :meth:`window_logits`."""
        if feats.background is None:
            raise ValueError("These features carry no background maps.")
        b = feats.batch_size
        hr, wr = feats.resized_size
        acc = feats.background.new_zeros(b, 1, hr, wr)
        count = feats.background.new_zeros(1, 1, hr, wr)
        for k in range(feats.background.shape[0]):
            win, bi = divmod(k, b)
            y1, y2, x1, x2 = feats.windows[win]
            acc[bi, :, y1:y2, x1:x2] += F.interpolate(
                feats.background[k : k + 1],
                size=(y2 - y1, x2 - x1),
                mode="bilinear",
                align_corners=False,
            )[0]
            if bi == 0:
                count[0, 0, y1:y2, x1:x2] += 1
        return self._to_input_size(acc.div_(count), feats)

    # -- decoding -------------------------------------------------------------------------
    def rule_background(self, vocabulary: Vocabulary) -> int | None:
        """The class :meth:`decode`'s background rule labels pixels as, or ``None`` when the
        rule does not apply to this vocabulary.

        The class is ``background_index`` when given, else the vocabulary's first class named
        like background (:attr:`Vocabulary.background_index`); ``"force"`` without an index
        means class 0.

        Raises:
            ValueError: ``background_rule=True`` and that class is not a background class, or
                an index outside the vocabulary.
        """
        if self.background_rule is False:
            return None
        n = vocabulary.num_classes
        if self.background_rule == "force":
            bg = 0 if self.background_index is None else self.background_index
            if not 0 <= bg < n:
                raise ValueError(
                    f"background_rule='force' labels pixels as class {bg}, but the vocabulary "
                    f"has {n} classes; set model.background_index."
                )
            return bg
        bg = (
            self.background_index
            if self.background_index is not None
            else (vocabulary.background_index)
        )
        ok = bg is not None and 0 <= bg < n and is_background_class(vocabulary.classes[bg])
        if self.background_rule and not ok:
            got = vocabulary.classes[bg] if bg is not None and 0 <= bg < n else "no such class"
            raise ValueError(
                f"CLIP-DINOiser's background rule labels pixels as a background class (one of "
                f"its names in {sorted(BACKGROUND_NAMES)}), got {got}; put 'background' in the "
                "vocabulary or set model.background_rule=False."
            )
        return bg if ok else None

    def uses_background_rule(self, vocabulary: Vocabulary) -> bool:
        """Whether :meth:`decode` applies the background rule for this vocabulary."""
        return self.rule_background(vocabulary) is not None

    @torch.no_grad()
    def decode(
        self,
        feats: ImageFeatures,
        text: ClassEmbeddings,
        prob_thd: float | None = None,
        return_probs: bool = True,
        name_chunk: int = 32,
    ) -> SegmentationOutput:
        """Labels (and probabilities) in the order ``self.decode_order`` (see the class
        docstring). The background rule (REFERENCE §3) applies when
        :meth:`uses_background_rule` says so; ``prob_thd`` / ``area_thd`` then act on the
        final maps as in the parent."""
        has_saliency = isinstance(feats, CLIPDINOiserFeatures) and feats.background is not None
        bg = self.rule_background(text.vocabulary) if has_saliency else None
        if self.decode_order == "paper":
            return self._decode_paper(feats, text, bg, prob_thd, return_probs, name_chunk)
        if bg is None:
            return super().decode(feats, text, prob_thd, return_probs, name_chunk)
        assert isinstance(feats, CLIPDINOiserFeatures) and self.dinoiser_head is not None
        out = super().decode(feats, text, prob_thd, return_probs=True)
        assert out.probs is not None
        labels = apply_background_rule(
            out.labels,
            out.probs,
            self.background_map(feats).to(out.probs.device),
            self.dinoiser_head.delta,
            bg,
        )
        return SegmentationOutput(
            labels=labels, probs=out.probs if return_probs else None, vocabulary=text.vocabulary
        )

    # -- the official order ("paper") -----------------------------------------------------
    @torch.no_grad()
    def window_probs(
        self, feats: ImageFeatures, text: ClassEmbeddings, rule_class: int | None = None
    ) -> Tensor:
        """Class probabilities of every window at feature resolution, ``[num_windows * B, C,
        gh, gw]`` (window-major): ``softmax(logit_scale * cos)`` over names, max over each
        class's names, then, when ``rule_class`` is a class index (see
        :meth:`rule_background`), that class set to 1.0 where the top probability is
        ``< delta`` and the saliency is not ``> 0.5`` (the official code's test, at feature
        resolution, before any upsampling)."""
        embeds = text.embeds.to(feats.dense.device)
        n2c = text.name_to_class.to(feats.dense.device)
        bg = rule_class
        background_rule = bg is not None
        if bg is not None:
            if not 0 <= bg < text.num_classes:
                raise ValueError(
                    f"The background rule labels pixels as class {bg}, but the vocabulary has "
                    f"{text.num_classes} classes; set model.background_index."
                )
            assert isinstance(feats, CLIPDINOiserFeatures) and feats.background is not None
            assert self.dinoiser_head is not None
            delta = self.dinoiser_head.delta
        out = []
        step = max(1, self.window_batch_size)
        for start in range(0, feats.dense.shape[0], step):
            cos = self.head(feats.dense[start : start + step], embeds)
            probs = torch.softmax(cos.mul_(self.logit_scale), dim=1)
            probs = max_over_synonyms(probs, n2c, text.num_classes)
            if background_rule:
                sal = feats.background[start : start + step, 0].to(probs)
                mask = (probs.max(dim=1).values < delta) & ~(sal > 0.5)
                probs[:, bg] = torch.where(mask, torch.ones_like(probs[:, bg]), probs[:, bg])
            out.append(probs)
        return torch.cat(out, dim=0)

    def merge_windows(self, maps: Tensor, feats: ImageFeatures) -> Tensor:
        """Window maps ``[num_windows * B, K, gh, gw]`` -> ``[B, K, H, W]`` at the input size:
        each upsampled (bilinear, ``align_corners=False``) to its crop, summed where windows
        overlap, divided by the overlap count (mmseg ``slide_inference``), then resized
        (bilinear) to the input size."""
        b = feats.batch_size
        hr, wr = feats.resized_size
        acc = maps.new_zeros(b, maps.shape[1], hr, wr)
        count = maps.new_zeros(1, 1, hr, wr)
        for k in range(maps.shape[0]):
            win, bi = divmod(k, b)
            y1, y2, x1, x2 = feats.windows[win]
            acc[bi, :, y1:y2, x1:x2] += F.interpolate(
                maps[k : k + 1], size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False
            )[0]
            if bi == 0:
                count[0, 0, y1:y2, x1:x2] += 1
        return self._to_input_size(acc.div_(count), feats)

    def _decode_paper(
        self,
        feats: ImageFeatures,
        text: ClassEmbeddings,
        rule_class: int | None,
        prob_thd: float | None,
        return_probs: bool,
        name_chunk: int,
    ) -> SegmentationOutput:
        wp = self.window_probs(feats, text, rule_class)
        if return_probs or self.pamr is not None or self.area_thd is not None:
            probs = self.merge_windows(wp, feats)
            if self.pamr is not None:
                # not in the official code: PAMR refines the averaged probability maps here
                assert feats.images is not None
                probs = self.pamr(self.backbone.normalize(feats.images), probs)
            labels = self.assign_labels(probs, prob_thd, text.vocabulary)
            return SegmentationOutput(
                labels=labels, probs=probs if return_probs else None, vocabulary=text.vocabulary
            )
        # classes in chunks (same labels, memory for one chunk of input-size maps)
        b = feats.batch_size
        h, w = feats.image_size
        best = wp.new_full((b, h, w), float("-inf"))
        labels = torch.zeros((b, h, w), dtype=torch.long, device=wp.device)
        for start in range(0, wp.shape[1], name_chunk):
            top, arg = self.merge_windows(wp[:, start : start + name_chunk], feats).max(dim=1)
            better = top > best
            best = torch.where(better, top, best)
            labels = torch.where(better, arg + start, labels)
        thd = self._prob_thd(prob_thd)
        if thd > 0:
            labels[best < thd] = self.resolve_background(text.vocabulary, "prob_thd")
        return SegmentationOutput(labels=labels, probs=None, vocabulary=text.vocabulary)
