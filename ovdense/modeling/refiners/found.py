"""FOUND background discovery (Siméoni et al., CVPR 2023, "Unsupervised Object Localization:
Observing the Background to Discover Objects"): the saliency target of CLIP-DINOiser's
background head (docs/methods.md#training-the-heads).

Variant implemented (:func:`found_saliency`): FOUND's *training-free discovery step*, as written
in the official FOUND code (``bkg_seg.compute_img_bkg_seg``), on the last block of a DINO ViT:

1. ``A [B, h, N]``: attention of the CLS token to the ``N`` patches, per head.
2. Head re-weighting (CroW-style sparsity, ``head_weighting=True``): with ``t`` the mean of
   ``A`` over heads and patches of the image, ``Q_h = |{i : A_hi > t}| / N`` and
   ``β_h = log(Σ_h' (Q_h' + ε) / (Q_h + ε))``; the per-head key chunks and attentions are
   multiplied by ``β_h``.
3. Seed = the patch with the lowest head-summed (re-weighted) CLS attention: surely background.
   ``num_seeds > 1`` takes the ``num_seeds`` least-attended patches and averages their
   similarities (an extension; FOUND's code and the default use one seed).
4. Background = patches whose cosine similarity to the seed (L2-normalised, re-weighted keys,
   heads concatenated) is ``> tau`` (``tau = 0.3``, FOUND's ``bkg_th``; strict ``>`` as in the
   code). Saliency = not background, in ``{0, 1}``.

Not implemented by default: FOUND's second stage, a 1×1 conv "decoder" trained on those masks.
The official CLIP-DINOiser training (as far as we know from its code; the paper only says
"FOUND's unsupervised saliency") uses FOUND's *released* model (DINO ViT-S/8 keys + that trained
decoder). Its weights are not something ovdense can ship or derive, so the default target is the
discovered mask, which is what the decoder was itself trained to imitate; a released FOUND
decoder file can be given to :class:`FOUNDSaliency` (``decoder_checkpoint``) to get the
official target (sigmoid of the decoder on the raw keys).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...utils.weights import load_weights_file
from ..backbones.vfm import LastBlockOutputs, TimmViTFeatures

__all__ = ["FOUNDSaliency", "found_background_similarity", "found_head_weights", "found_saliency"]


def found_head_weights(cls_attn: Tensor, eps: float = 1e-10) -> Tensor:
    """FOUND's per-head weights ``β`` ``[B, h]`` from the CLS attention ``[B, h, N]`` (step 2
    of the module doc)."""
    b, h, n = cls_attn.shape
    thr = cls_attn.reshape(b, -1).mean(dim=1)  # [B]
    q = (cls_attn > thr[:, None, None]).sum(dim=2).to(cls_attn.dtype) / n  # [B, h]
    return torch.log((q + eps).sum(dim=1, keepdim=True) / (q + eps))


def found_background_similarity(
    cls_attn: Tensor,
    feats: Tensor,
    head_weighting: bool = True,
    num_seeds: int = 1,
    eps: float = 1e-10,
) -> Tensor:
    """Mean cosine similarity of every patch to the seed (least-attended) patches.

    Args:
        cls_attn: ``[B, h, N]`` CLS-to-patch attention of the last block, per head.
        feats: ``[B, N, C]`` patch features (DINO keys, heads concatenated; ``C % h == 0``).
        head_weighting: re-weight heads by FOUND's ``β`` (see the module doc).
        num_seeds: number of least-attended patches used as seeds (FOUND: 1).
        eps: FOUND's ``ε``.

    Returns:
        ``[B, N]`` similarities in ``[-1, 1]``.
    """
    b, h, n = cls_attn.shape
    if feats.ndim != 3 or feats.shape[:2] != (b, n) or feats.shape[-1] % h:
        raise ValueError(
            f"feats must be [B, N, C] = [{b}, {n}, C] with C divisible by the {h} heads of "
            f"cls_attn {tuple(cls_attn.shape)}, got {tuple(feats.shape)}."
        )
    if not 1 <= num_seeds <= n:
        raise ValueError(f"num_seeds must be in [1, {n}], got {num_seeds}.")
    attn = cls_attn.float()
    descs = feats.float().reshape(b, n, h, -1)
    if head_weighting:
        beta = found_head_weights(attn, eps)  # [B, h]
        descs = descs * beta[:, None, :, None]
        attn = attn * beta[:, :, None]
    descs = F.normalize(descs.reshape(b, n, -1), dim=-1)
    seeds = attn.sum(dim=1).topk(num_seeds, dim=-1, largest=False).indices  # [B, k]
    seed_descs = torch.gather(descs, 1, seeds[..., None].expand(-1, -1, descs.shape[-1]))
    return (descs @ seed_descs.transpose(1, 2)).mean(dim=-1)  # [B, N]


def found_saliency(
    cls_attn: Tensor,
    feats: Tensor,
    grid: tuple[int, int],
    tau: float = 0.3,
    head_weighting: bool = True,
    num_seeds: int = 1,
) -> Tensor:
    """FOUND's discovered saliency (see the module doc for the variant).

    Args:
        cls_attn: ``[B, h, N]`` CLS-to-patch attention, ``N = gh * gw`` (row-major).
        feats: ``[B, N, C]`` patch features (DINO keys of the last block).
        grid: ``(gh, gw)``.
        tau: background similarity threshold (FOUND: 0.3).
        head_weighting, num_seeds: see :func:`found_background_similarity`.

    Returns:
        ``[B, 1, gh, gw]`` float in ``{0, 1}``: 1 = salient (not background).
    """
    gh, gw = (int(g) for g in grid)
    if cls_attn.ndim != 3 or cls_attn.shape[-1] != gh * gw:
        raise ValueError(
            f"cls_attn must be [B, heads, {gh * gw}] for grid {grid}, got {tuple(cls_attn.shape)}."
        )
    sim = found_background_similarity(cls_attn, feats, head_weighting, num_seeds)
    salient = (sim <= tau).to(torch.float32)
    return salient.reshape(-1, 1, gh, gw)


def _read_decoder(path: str | os.PathLike) -> dict[str, Tensor]:
    p = os.fspath(path)
    obj = load_weights_file(
        p,
        what="FOUND decoder checkpoint",
        hint="FOUND's release: https://github.com/valeoai/FOUND, data/weights/decoder_weights.pt",
    )
    if isinstance(obj, Mapping) and isinstance(obj.get("decoder"), Mapping):
        obj = obj["decoder"]
    if not isinstance(obj, Mapping) or sorted(obj) != ["bias", "weight"]:
        got = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{p} is not a FOUND decoder: expected {{'decoder': {{'weight', 'bias'}}}} or "
            f"{{'weight', 'bias'}} of a 1x1 conv, got {got}."
        )
    return dict(obj)


class FOUNDSaliency(nn.Module):
    """FOUND saliency of images from a (frozen) DINO ViT.

    Args:
        vfm: a timm DINO wrapper (:class:`~ovdense.modeling.backbones.vfm.TimmViTFeatures`,
            e.g. ``build_vfm("dino_vits8")`` as FOUND, or the CLIP-DINOiser teacher
            ``build_vfm("dino_vitb16")``); only its :meth:`last_block` is used.
        tau, head_weighting, num_seeds: see :func:`found_saliency`.
        decoder_checkpoint: FOUND's released 1×1 decoder (``{"decoder": {weight, bias}}``);
            with it the saliency is ``sigmoid(decoder(keys))`` (soft, in ``[0, 1]``) instead of
            the discovered mask.
    """

    def __init__(
        self,
        vfm: TimmViTFeatures,
        tau: float = 0.3,
        head_weighting: bool = True,
        num_seeds: int = 1,
        decoder_checkpoint: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(vfm, TimmViTFeatures):
            raise TypeError(
                "FOUNDSaliency needs a timm DINO wrapper, e.g. build_vfm('dino_vits8'), got "
                f"{type(vfm).__name__}."
            )
        self.vfm = vfm
        self.tau = float(tau)
        self.head_weighting = bool(head_weighting)
        self.num_seeds = int(num_seeds)
        self.decoder: nn.Conv2d | None = None
        if decoder_checkpoint is not None:
            state = _read_decoder(decoder_checkpoint)
            self.decoder = nn.Conv2d(vfm.embed_dim, 1, 1)
            try:
                self.decoder.load_state_dict(state)
            except RuntimeError as err:
                raise ValueError(
                    f"{decoder_checkpoint} does not fit a 1x1 conv on {vfm.embed_dim} channels "
                    f"(weight {tuple(state['weight'].shape)}); FOUND's decoder is for DINO "
                    "ViT-S/8 keys (384 channels)."
                ) from err
        self.requires_grad_(False)

    def from_last_block(self, out: LastBlockOutputs) -> Tensor:
        """Saliency ``[B, 1, gh, gw]`` from a :class:`LastBlockOutputs` of ``self.vfm``."""
        if self.decoder is not None:
            return torch.sigmoid(self.decoder(out.to_map("key").to(self.decoder.weight.dtype)))
        return found_saliency(
            out.cls_attn, out.key, out.grid, self.tau, self.head_weighting, self.num_seeds
        )

    @torch.no_grad()
    def forward(self, images01: Tensor) -> Tensor:
        """Args:
            images01: ``[B, 3, H, W]`` RGB in ``[0, 1]``.

        Returns:
            ``[B, 1, gh, gw]`` saliency on the DINO grid (1 = salient).
        """
        return self.from_last_block(self.vfm.last_block(images01))

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau}, head_weighting={self.head_weighting}, num_seeds={self.num_seeds}, "
            f"decoder={self.decoder is not None}"
        )
