"""timm ViTs as vision foundation models: DINO (v1) and DINOv2 (with registers).

- ``dino_vits16``, ``dino_vits8``, ``dino_vitb16``, ``dino_vitb8``: DINO through timm
  (``vit_{small,base}_patch{16,8}_224.dino``); features = keys of the last block (heads
  concatenated, patch tokens). :meth:`TimmViTFeatures.last_block` also gives the CLS
  attention (FOUND, :mod:`ovdense.modeling.refiners.found`).
- ``dinov2_vitb14_reg``: DINOv2 ViT-B/14 with 4 registers through timm
  (``vit_base_patch14_reg4_dinov2.lvd142m``); last-layer normalised patch tokens (CLS and
  registers dropped).

Weights: timm ``pretrained=True`` from the Hugging Face hub, or ``checkpoint=`` a local file (timm
or the official DINO / DINOv2 layout) read with ``weights_only=True``; ``pretrained=False`` with
timm size arguments gives tiny random models (tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...utils.weights import WeightsUnavailableError, unreachable_reason
from ..layers import interpolate_pos_embed
from .base import IMAGENET_MEAN, IMAGENET_STD, VisionFoundationModel, check_file, read_state_dict
from .registry import VFMS

__all__ = [
    "DINOFeatures",
    "DINOv2Features",
    "LastBlockOutputs",
    "TimmViTFeatures",
    "load_timm_vit",
]

TIMM_FEATURES = ("key", "query", "value", "query_key", "tokens")
TIMM_POS_INTERP = ("timm", "dino")


class TimmViTFeatures(VisionFoundationModel):
    """Patch features of a timm ``VisionTransformer`` at any input size.

    Args:
        model: a timm ViT (``timm.create_model("vit_...")``); shared, not copied.
        feature: ``"key"`` / ``"query"`` / ``"value"``: the last block's attention projections of
            ``blocks[-1].norm1(x)`` (heads concatenated, ``qkv`` bias included); ``"tokens"``:
            the output of the last block after the final ``norm``. Prefix tokens (CLS,
            registers) are dropped.
        pos_interp: how position embeddings reach a non-native grid. ``"timm"``: timm's
            ``resample_abs_pos_embed`` (bicubic to the target size, antialiased), also what the
            official DINOv2 register models do; ``"dino"``: the official DINO (v1) code, bicubic
            with ``scale_factor = (g + 0.1) / g0`` (values differ slightly off the native grid).
        mean, std: normalisation; default: the model's ``pretrained_cfg`` (else ImageNet's).
    """

    def __init__(
        self,
        model: nn.Module,
        feature: str = "tokens",
        pos_interp: str = "timm",
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__()
        # a timm VisionTransformer (or a variant with its parts): read by name
        vit: Any = model
        if feature not in TIMM_FEATURES:
            raise ValueError(f"feature must be one of {TIMM_FEATURES}, got {feature!r}.")
        if pos_interp not in TIMM_POS_INTERP:
            raise ValueError(f"pos_interp must be one of {TIMM_POS_INTERP}, got {pos_interp!r}.")
        proj = getattr(getattr(model, "patch_embed", None), "proj", None)
        if not isinstance(proj, nn.Conv2d) or not hasattr(model, "blocks"):
            raise TypeError(
                "TimmViTFeatures needs a timm VisionTransformer (patch_embed.proj and blocks), "
                f"got {type(model).__name__}."
            )
        kh, kw = proj.kernel_size
        if kh != kw or tuple(proj.stride) != (kh, kw):
            raise ValueError(f"Only square, non-overlapping patches are supported, got {kh}x{kw}.")
        if feature != "tokens" and getattr(vit.blocks[-1].attn, "qkv", None) is None:
            raise ValueError(
                f"feature={feature!r} needs a fused qkv projection in the last block; "
                "use feature='tokens'."
            )
        self.model = vit
        self.feature = feature
        self.pos_interp = pos_interp
        self.patch_size = int(kh)
        self.embed_dim = int(proj.out_channels)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        self.mean = tuple(mean or cfg.get("mean") or IMAGENET_MEAN)
        self.std = tuple(std or cfg.get("std") or IMAGENET_STD)

    def _pos_embed(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """timm's ``_pos_embed`` with our interpolation: ``[B, gh*gw, C]`` -> ``[B, P + N, C]``."""
        m = self.model
        to_cat = []
        if getattr(m, "cls_token", None) is not None:
            to_cat.append(m.cls_token.expand(x.shape[0], -1, -1))
        if getattr(m, "reg_token", None) is not None:
            to_cat.append(m.reg_token.expand(x.shape[0], -1, -1))
        pos = getattr(m, "pos_embed", None)
        no_embed_class = bool(getattr(m, "no_embed_class", False))
        if pos is not None:
            prefix = 0 if no_embed_class else int(getattr(m, "num_prefix_tokens", len(to_cat)))
            gh0, gw0 = m.patch_embed.grid_size
            src = (int(gh0), int(gw0))
            if self.pos_interp == "dino":
                pos = interpolate_pos_embed(pos[0], src, grid, "scale_factor", prefix)[None]
            elif grid != src:
                from timm.layers import resample_abs_pos_embed

                pos = resample_abs_pos_embed(pos, list(grid), list(src), num_prefix_tokens=prefix)
            pos = pos.to(x.dtype)
        if pos is not None and no_embed_class:
            x = x + pos
        x = torch.cat([*to_cat, x], dim=1) if to_cat else x
        if pos is not None and not no_embed_class:
            x = x + pos
        return m.pos_drop(x) if hasattr(m, "pos_drop") else x

    def tokens(
        self, images01: Tensor, num_blocks: int | None = None
    ) -> tuple[Tensor, tuple[int, int]]:
        """Tokens ``[B, P + gh*gw, C]`` after the first ``num_blocks`` blocks (all: ``None``;
        no final norm) and the grid ``(gh, gw)``."""
        self._check_images(images01)
        m = self.model
        x = self.pad_to_patches(self.normalize(images01.to(self.dtype)))
        x = m.patch_embed.proj(x)
        grid = (int(x.shape[-2]), int(x.shape[-1]))
        x = x.flatten(2).transpose(1, 2)
        x = m.patch_embed.norm(x) if hasattr(m.patch_embed, "norm") else x
        x = self._pos_embed(x, grid)
        for name in ("patch_drop", "norm_pre"):
            if hasattr(m, name):
                x = getattr(m, name)(x)
        blocks = m.blocks if num_blocks is None else m.blocks[:num_blocks]
        for blk in blocks:
            x = blk(x)
        return x, grid

    @property
    def num_prefix_tokens(self) -> int:
        """CLS + register tokens before the patch tokens."""
        return int(getattr(self.model, "num_prefix_tokens", 1))

    def forward(self, images01: Tensor) -> Tensor:
        """Args:
            images01: ``[B, 3, H, W]`` RGB in ``[0, 1]``.

        Returns:
            ``[B, C, ceil(H / p), ceil(W / p)]`` (see :class:`VisionFoundationModel` for the
            padding).
        """
        if self.feature == "tokens":
            x, grid = self.tokens(images01)
            x = self.model.norm(x)
        else:
            x, grid = self.tokens(images01, len(self.model.blocks) - 1)
            last = self.model.blocks[-1]
            q, k, v = last.attn.qkv(last.norm1(x)).chunk(3, dim=-1)
            x = (
                q + k
                if self.feature == "query_key"
                else {"query": q, "key": k, "value": v}[self.feature]
            )
        x = x[:, self.num_prefix_tokens :]
        return x.transpose(1, 2).reshape(x.shape[0], -1, grid[0], grid[1])

    def last_block(self, images01: Tensor) -> LastBlockOutputs:
        """The last block's attention inputs and the CLS token's attention over the patches.

        ``q, k, v`` are the projections of ``blocks[-1].norm1(x)`` (heads concatenated, bias
        included; timm's optional ``q_norm`` / ``k_norm`` applied to ``q, k`` for the attention
        only), patch tokens only; ``cls_attn`` is row 0 (CLS) of
        ``softmax(q kᵀ · attn.scale)`` over *all* tokens (prefix included), restricted to the
        patch columns, per head.

        Args:
            images01: ``[B, 3, H, W]`` RGB in ``[0, 1]``.

        Returns:
            :class:`LastBlockOutputs` with ``query/key/value`` ``[B, N, C]``, ``cls_attn``
            ``[B, heads, N]`` (``N = gh * gw``, row-major) and ``grid``.

        Raises:
            ValueError: the last block has no fused ``qkv`` projection.
        """
        attn = self.model.blocks[-1].attn
        if getattr(attn, "qkv", None) is None:
            raise ValueError("last_block() needs a fused qkv projection in the last block.")
        x, grid = self.tokens(images01, len(self.model.blocks) - 1)
        q, k, v = attn.qkv(self.model.blocks[-1].norm1(x)).chunk(3, dim=-1)
        b, n_tok, c = q.shape
        heads = int(attn.num_heads)
        qh = q.reshape(b, n_tok, heads, c // heads).transpose(1, 2)  # [B, h, T, d]
        kh = k.reshape(b, n_tok, heads, c // heads).transpose(1, 2)
        qh = attn.q_norm(qh) if hasattr(attn, "q_norm") else qh
        kh = attn.k_norm(kh) if hasattr(attn, "k_norm") else kh
        scale = float(getattr(attn, "scale", (c // heads) ** -0.5))
        weights = ((qh[:, :, :1] @ kh.transpose(-2, -1)) * scale).softmax(dim=-1)  # [B, h, 1, T]
        p = self.num_prefix_tokens
        return LastBlockOutputs(
            query=q[:, p:],
            key=k[:, p:],
            value=v[:, p:],
            cls_attn=weights[:, :, 0, p:],
            grid=grid,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, feature={self.feature!r}, pos_interp={self.pos_interp!r}"


@dataclass
class LastBlockOutputs:
    """What :meth:`TimmViTFeatures.last_block` returns (patch tokens only, ``N = gh * gw``).

    Attributes:
        query, key, value: ``[B, N, C]`` last-block projections (heads concatenated).
        cls_attn: ``[B, heads, N]`` attention of the CLS token to each patch.
        grid: ``(gh, gw)``.
    """

    query: Tensor
    key: Tensor
    value: Tensor
    cls_attn: Tensor
    grid: tuple[int, int]

    def to_map(self, name: str) -> Tensor:
        """``query`` / ``key`` / ``value`` as a ``[B, C, gh, gw]`` map."""
        x = getattr(self, name)
        return x.transpose(1, 2).reshape(x.shape[0], -1, self.grid[0], self.grid[1])


class DINOFeatures(TimmViTFeatures):
    """DINO (Caron et al., 2021) ViT: keys of the last block, position embeddings interpolated
    as the official DINO code does (see :class:`TimmViTFeatures` for the arguments)."""

    def __init__(
        self,
        model: nn.Module,
        feature: str = "key",
        pos_interp: str = "dino",
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__(model, feature=feature, pos_interp=pos_interp, mean=mean, std=std)


class DINOv2Features(TimmViTFeatures):
    """DINOv2 (Oquab et al., 2024) ViT, with or without registers: last-layer normalised patch
    tokens, CLS and register tokens dropped (see :class:`TimmViTFeatures` for the arguments)."""

    def __init__(
        self,
        model: nn.Module,
        feature: str = "tokens",
        pos_interp: str = "timm",
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__(model, feature=feature, pos_interp=pos_interp, mean=mean, std=std)


def _timm_weights_reachable(name: str) -> None:
    """Fail at once (instead of minutes of retries) when the weights are neither cached nor
    reachable."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub:
        return
    reason = unreachable_reason(
        hf_repo=hub, hf_filenames=("model.safetensors", "pytorch_model.bin")
    )
    if reason is not None:
        raise WeightsUnavailableError(_timm_download_message(name, reason))


def _timm_download_message(name: str, reason: str) -> str:
    return (
        f"Could not download the timm weights {name} ({reason}); if this machine is offline, "
        f"download them elsewhere (Hugging Face hub: timm/{name}, or the official checkpoint) "
        "and pass the file: checkpoint='/path/to/weights.pth' "
        "(config: model.strategy_kwargs.vfm_kwargs.checkpoint=/path/to/file)."
    )


def load_timm_vit(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = True,
    **model_kwargs: Any,
) -> nn.Module:
    """``timm.create_model(name, **model_kwargs)`` with weights from the hub (``pretrained``) or
    a local file (``checkpoint``: timm or official DINO / DINOv2 layout, ``weights_only=True``).
    """
    import timm

    if checkpoint is not None:
        path = check_file(checkpoint, name, f"the Hugging Face hub (timm/{name})")
        model = timm.create_model(name, pretrained=False, **model_kwargs)
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(read_state_dict(path), model)  # type: ignore[arg-type]  # create_model: nn.Module
        missing, unexpected = model.load_state_dict(state, strict=False)
        unexpected = [k for k in unexpected if not k.startswith(("head.", "mask_token"))]
        if missing or unexpected:
            raise RuntimeError(
                f"Could not load {path} into timm {name}: missing keys {missing[:5]}, unexpected "
                f"keys {unexpected[:5]}; check that the file holds this architecture's weights."
            )
        return model
    if not pretrained:
        return timm.create_model(name, pretrained=False, **model_kwargs)
    _timm_weights_reachable(name)
    try:
        return timm.create_model(name, pretrained=True, **model_kwargs)
    except (OSError, ConnectionError, TimeoutError) as err:
        raise WeightsUnavailableError(_timm_download_message(name, type(err).__name__)) from None


def _register_timm(
    name: str, timm_name: str, cls: type[TimmViTFeatures], feature: str, pos_interp: str
) -> None:
    def build(
        checkpoint: str | os.PathLike | None = None,
        pretrained: bool = True,
        feature: str = feature,
        pos_interp: str = pos_interp,
        **model_kwargs: Any,
    ) -> VisionFoundationModel:
        model = load_timm_vit(timm_name, checkpoint, pretrained, **model_kwargs)
        return cls(model, feature=feature, pos_interp=pos_interp)

    build.__name__ = f"build_{name}"
    build.__doc__ = (
        f"``{cls.__name__}`` of timm ``{timm_name}`` (``feature={feature!r}``); extra keyword "
        "arguments go to ``timm.create_model``."
    )
    VFMS.register(name)(build)


_register_timm("dino_vits16", "vit_small_patch16_224.dino", DINOFeatures, "key", "dino")
_register_timm("dino_vits8", "vit_small_patch8_224.dino", DINOFeatures, "key", "dino")
_register_timm("dino_vitb16", "vit_base_patch16_224.dino", DINOFeatures, "key", "dino")
_register_timm("dino_vitb8", "vit_base_patch8_224.dino", DINOFeatures, "key", "dino")
_register_timm(
    "dinov2_vitb14_reg", "vit_base_patch14_reg4_dinov2.lvd142m", DINOv2Features, "tokens", "timm"
)
