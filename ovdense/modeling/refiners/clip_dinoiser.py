"""CLIP-DINOiser's inference head (Wysoczańska et al., ECCV 2024; docs/methods.md#clip-dinoiser).

Two small convolutions on the patch tokens entering the MLP of CLIP block −3 (the output of that
block's ``ln_2``):

* ``obj_proj`` (3×3, ``width -> 256``, replicate padding): its per-pixel L2-normalised output
  gives patch correlations that imitate DINO's; MaskCLIP features are averaged with them
  (:meth:`CLIPDINOiserHead.pool`).
* ``bkg_decoder`` (1×1, ``width -> 1``) on the per-pixel L2-normalised tokens: a saliency map
  imitating FOUND (:meth:`CLIPDINOiserHead.background`).

The parameter names are those of the released checkpoint ``last.pt``, which
:meth:`CLIPDINOiserHead.load_official` reads.

:class:`CLIPDINOiserRefiner` mounts the head in a segmentor's ``refiner`` slot: it takes the
features of :class:`~ovdense.modeling.segmentors.clip_dinoiser.CLIPDINOiserBackbone` (MaskCLIP,
plus the block −3 ``ln_2`` tokens and the unnormalised projection as intermediates) and returns
the pooled features and the saliency as the auxiliary map ``"background"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...utils.weights import load_weights_file
from ..backbones.base import DenseFeatures

__all__ = [
    "FEATURE_KEY",
    "VALUES_KEY",
    "CLIPDINOiserHead",
    "CLIPDINOiserRefiner",
    "read_clip_dinoiser_state_dict",
]

#: ``DenseFeatures.intermediates`` key of the hooked block's ``ln_2`` output ``[B, C, h, w]``.
FEATURE_KEY = "ln_2"
#: ``DenseFeatures.intermediates`` key of the unnormalised projected features ``[B, D, h, w]``
#: (what the correlations average; ``dense`` is their L2-normalised copy).
VALUES_KEY = "projected"

#: Parameter names (and ranks) of the released ``last.pt``'s ``model_state_dict``.
OFFICIAL_KEYS = ("obj_proj.weight", "obj_proj.bias", "bkg_decoder.weight", "bkg_decoder.bias")

CHECKPOINT_HINT = (
    "the released CLIP-DINOiser checkpoint is `last.pt` from https://github.com/wysoczanska/"
    "clip_dinoiser (folder `checkpoints/`), trained for OpenCLIP ViT-B-16 laion2b_s34b_b88k"
)


def _expected_shapes(width: int, proj_dim: int) -> dict[str, tuple[int, ...]]:
    return {
        "obj_proj.weight": (proj_dim, width, 3, 3),
        "obj_proj.bias": (proj_dim,),
        "bkg_decoder.weight": (1, width, 1, 1),
        "bkg_decoder.bias": (1,),
    }


def read_clip_dinoiser_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read the head's four tensors from an official ``last.pt`` or a bare state dict.

    Accepts ``{"epoch": ..., "model_state_dict": {...}}`` (the release), a ``model_*.pt``
    checkpoint of :class:`~ovdense.engine.Trainer` training
    :class:`~ovdense.modeling.distill.CLIPDINOiserDistill` (its ``head.*`` entries), or the
    state dict itself. Only structure is checked here (a dict of tensors with exactly
    :data:`OFFICIAL_KEYS`); shapes are checked against a head by
    :meth:`CLIPDINOiserHead.load_official`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a torch file, or not a CLIP-DINOiser head (names the missing / extra
            keys).
    """
    p = os.fspath(path)
    obj = load_weights_file(p, what="CLIP-DINOiser checkpoint", hint=CHECKPOINT_HINT)
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    elif (
        isinstance(obj, Mapping)
        and str(obj.get("format", "")).startswith("ovdense.train/")
        and isinstance(obj.get("model"), Mapping)
    ):
        # a checkpoint of ovdense's Trainer running CLIPDINOiserDistill: the head is "head.*"
        obj = {
            k.removeprefix("head."): v for k, v in obj["model"].items() if k.startswith("head.")
        } or obj["model"]
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{p} holds a {type(obj).__name__}, not a state dict; expected {CHECKPOINT_HINT}."
        )
    state = {str(k).removeprefix("module."): v for k, v in obj.items()}
    missing = [k for k in OFFICIAL_KEYS if k not in state]
    extra = sorted(k for k in state if k not in OFFICIAL_KEYS)
    if missing or extra:
        raise ValueError(
            f"{p} is not a CLIP-DINOiser head: missing keys {missing}, unexpected keys "
            f"{extra[:10]}{' ...' if len(extra) > 10 else ''}; expected exactly "
            f"{list(OFFICIAL_KEYS)} ({CHECKPOINT_HINT})."
        )
    bad = [k for k in OFFICIAL_KEYS if not isinstance(state[k], Tensor)]
    if bad:
        raise ValueError(f"{p}: entries {bad} are not tensors.")
    return {k: state[k] for k in OFFICIAL_KEYS}


class CLIPDINOiserHead(nn.Module):
    """CLIP-DINOiser's correlation and background convolutions.

    Args:
        width: channels ``C`` of the CLIP ViT tokens (768 for ViT-B/16).
        proj_dim: channels of the correlation projection (256 in the release).
        gamma: correlations below this get weight 0 in :meth:`pool` (must be > 0).
        delta: the segmentor's confidence bound of the background rule
            (docs/methods.md#clip-dinoiser); stored here so that one object carries all of the
            method's constants.
    """

    def __init__(
        self, width: int, proj_dim: int = 256, gamma: float = 0.2, delta: float = 0.99
    ) -> None:
        super().__init__()
        if width < 1 or proj_dim < 1:
            raise ValueError(f"width and proj_dim must be >= 1, got {width}, {proj_dim}.")
        if not gamma > 0:
            # NOTE: gamma > 0 keeps every weight non-negative, so a row's total is 0 only when
            # no correlation reaches gamma (see pool()).
            raise ValueError(f"gamma must be > 0, got {gamma}.")
        if not 0 < delta <= 1:
            raise ValueError(f"delta must be in (0, 1], got {delta}.")
        self.width = int(width)
        self.proj_dim = int(proj_dim)
        self.gamma = float(gamma)
        self.delta = float(delta)
        self.obj_proj = nn.Conv2d(width, proj_dim, 3, padding=1, padding_mode="replicate")
        self.bkg_decoder = nn.Conv2d(width, 1, 1)

    def _check(self, feats: Tensor) -> None:
        if feats.ndim != 4 or feats.shape[1] != self.width:
            raise ValueError(
                f"feats must be [B, {self.width}, h, w] (block −3 tokens), got "
                f"{tuple(feats.shape)}."
            )

    def correlations(self, feats: Tensor) -> Tensor:
        """Patch correlations.

        Args:
            feats: ``[B, C, h, w]`` block −3 ``ln_2`` output (not normalised).

        Returns:
            ``[B, N, N]`` with ``N = h * w``: dot products of the per-pixel L2-normalised
            ``obj_proj`` outputs (row-major pixel order), i.e. cosines in ``[-1, 1]``.
        """
        self._check(feats)
        z = F.normalize(self.obj_proj(feats), dim=1).flatten(2)  # [B, P, N]
        return z.transpose(1, 2) @ z

    def pool(self, dense: Tensor, corr: Tensor) -> Tensor:
        """Affinity pooling ``f'_i = Σ_j w_ij f_j / Σ_j w_ij``, ``w_ij = corr_ij [corr_ij ≥ γ]``.

        Args:
            dense: ``[B, D, h, w]`` MaskCLIP projected features (not normalised).
            corr: ``[B, N, N]`` correlations, ``N = h * w`` (see :meth:`correlations`).

        Returns:
            ``[B, D, h, w]`` pooled features. A pixel whose row has no weight (no correlation
            reaches γ) keeps its own feature; with :meth:`correlations` this cannot happen
            since ``corr_ii = 1``, but it guards other affinities and degenerate inputs.
        """
        b, d, h, w = dense.shape
        n = h * w
        if corr.shape != (b, n, n):
            raise ValueError(
                f"corr must be [B, N, N] = {(b, n, n)} for dense {tuple(dense.shape)}, got "
                f"{tuple(corr.shape)}."
            )
        wts = torch.where(corr >= self.gamma, corr, torch.zeros_like(corr)).to(dense.dtype)
        total = wts.sum(dim=-1)  # [B, N]
        f = dense.flatten(2)  # [B, D, N]
        pooled = torch.einsum("bij,bdj->bdi", wts, f)
        empty = total <= 0
        pooled = torch.where(
            empty[:, None], f, pooled / torch.where(empty, torch.ones_like(total), total)[:, None]
        )
        return pooled.reshape(b, d, h, w)

    def background(self, feats: Tensor) -> Tensor:
        """Saliency ``[B, 1, h, w]`` in ``[0, 1]``: sigmoid of ``bkg_decoder`` on the per-pixel
        L2-normalised ``feats`` (``[B, C, h, w]``); below 0.5 means "not salient"."""
        self._check(feats)
        return torch.sigmoid(self.bkg_decoder(F.normalize(feats, dim=1)))

    def load_official(self, path: str | os.PathLike) -> CLIPDINOiserHead:
        """Load the released ``last.pt`` (or a bare state dict with the same keys).

        Raises:
            FileNotFoundError, ValueError: unreadable file, missing / extra keys, or shapes that
                do not fit this head (the message gives the expected ViT width).

        Returns:
            ``self``.
        """
        state = read_clip_dinoiser_state_dict(path)
        expected = _expected_shapes(self.width, self.proj_dim)
        wrong = {
            k: tuple(v.shape) for k, v in state.items() if tuple(v.shape) != tuple(expected[k])
        }
        if wrong:
            got_width = (
                state["bkg_decoder.weight"].shape[1]
                if state["bkg_decoder.weight"].ndim == 4
                else "?"
            )
            raise ValueError(
                f"{os.fspath(path)} does not fit a CLIP-DINOiser head for a ViT of width "
                f"{self.width}: shapes {wrong}, expected "
                f"{ {k: expected[k] for k in wrong} } (the checkpoint looks like width "
                f"{got_width}; the release is for ViT-B-16, width 768)."
            )
        with torch.no_grad():
            for name, t in state.items():
                self.get_parameter(name).copy_(t)
        return self

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, delta={self.delta}"


class CLIPDINOiserRefiner(nn.Module):
    """CLIP-DINOiser in a segmentor's ``refiner`` slot: affinity pooling + saliency.

    ``forward(features, images) -> (features', {"background": saliency})`` with ``features'``
    the pooled features ``normalise(head.pool(projected, head.correlations(ln_2)))`` and the
    saliency ``[B, 1, h, w]`` (sigmoid of the background head) at feature resolution.

    Args:
        head: the trained :class:`CLIPDINOiserHead`, or ``None`` (``forward`` then refuses to
            run: a random head would be meaningless).
    """

    def __init__(self, head: CLIPDINOiserHead | None = None) -> None:
        super().__init__()
        self.head = head

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike,
        width: int,
        gamma: float = 0.2,
        delta: float = 0.99,
    ) -> CLIPDINOiserRefiner:
        """The refiner of a released ``last.pt`` (or a converted / ovdense-trained head, see
        :func:`read_clip_dinoiser_state_dict`) for a ViT of ``width`` channels; the projection
        width is read from the file (256 in the release)."""
        w = read_clip_dinoiser_state_dict(checkpoint)["obj_proj.weight"]
        proj_dim = int(w.shape[0]) if w.ndim == 4 else 256
        head = CLIPDINOiserHead(width, proj_dim=proj_dim, gamma=gamma, delta=delta)
        return cls(head.load_official(checkpoint))

    def forward(
        self, features: DenseFeatures, images: Tensor | None = None
    ) -> tuple[DenseFeatures, dict[str, Tensor]]:
        """Args:
            features: a backbone's output carrying ``intermediates[FEATURE_KEY]`` (``[B, C, h,
                w]``) and ``intermediates[VALUES_KEY]`` (``[B, D, h, w]``).
            images: the backbone's input (unused).

        Returns:
            ``(DenseFeatures with dense [B, D, h, w] pooled and L2-normalised,
            {"background": [B, 1, h, w] saliency})``.
        """
        if self.head is None:
            raise ValueError(
                "CLIP-DINOiser needs its trained head (a random one would be meaningless): "
                f"{CHECKPOINT_HINT}; set model.head_checkpoint=/path/to/last.pt."
            )
        inter = features.intermediates
        missing = [k for k in (FEATURE_KEY, VALUES_KEY) if k not in inter]
        if missing:
            raise ValueError(
                f"CLIPDINOiserRefiner needs the backbone intermediates {missing} (given: "
                f"{sorted(inter)}); use CLIPDINOiserBackbone."
            )
        feats, values = inter[FEATURE_KEY], inter[VALUES_KEY]
        pooled = self.head.pool(values, self.head.correlations(feats.to(values.dtype)))
        refined = DenseFeatures(
            dense=F.normalize(pooled, dim=1),
            stride=features.stride,
            global_embed=features.global_embed,
            intermediates=inter,
        )
        return refined, {"background": self.head.background(feats)}
