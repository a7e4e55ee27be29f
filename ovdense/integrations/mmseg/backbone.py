"""``OVDenseBackbone``: ovdense's dense CLIP backbone as an mmseg backbone.

For mmseg models with a decode head (e.g. a linear or FPN head trained on CLIP's dense
features): the CLIP vision tower with one of ovdense's last-block strategies, returning a tuple
of ``[B, C, h, w]`` maps as mmseg backbones do: the requested block outputs (``out_indices``),
then the dense image-text embeddings. Inputs are the data preprocessor's normalised images
(normalise with the CLIP's mean and std, ``mean=[122.771, 116.746, 104.094], std=[68.501,
66.632, 70.323]`` for OpenAI CLIP), any size (padded to whole patches by the preprocessor).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor

from ...modeling.backbones import build_clip_backbone

__all__ = ["OVDenseBackbone"]


@MODELS.register_module()
class OVDenseBackbone(BaseModule):
    """Args: those of :func:`ovdense.build_clip_backbone` (``model_name``, ``pretrained``,
    ``checkpoint``, ``config``, ``strategy``, ``strategy_kwargs``, ``pos_interp``,
    ``out_indices``); ``frozen`` (default True) keeps the CLIP weights fixed."""

    def __init__(
        self,
        model_name: str | None = "ViT-B-16",
        pretrained: str | None = "openai",
        checkpoint: str | None = None,
        config: dict[str, Any] | None = None,
        strategy: str = "naclip",
        strategy_kwargs: dict[str, Any] | None = None,
        pos_interp: str = "scale_factor",
        out_indices: Sequence[int] = (),
        frozen: bool = True,
        init_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if config is not None:
            model_name = pretrained = None
        self.backbone = build_clip_backbone(
            model_name,
            pretrained,
            checkpoint=checkpoint,
            config=config,
            strategy=strategy,
            strategy_kwargs=strategy_kwargs,
            pos_interp=pos_interp,
            out_indices=tuple(out_indices),
        )
        self.out_indices = tuple(out_indices)
        self.frozen = frozen
        if frozen:
            self.backbone.requires_grad_(False)

    def init_weights(self) -> None:
        """The CLIP weights are loaded when built; nothing to initialise."""

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        with torch.set_grad_enabled(not self.frozen and torch.is_grad_enabled()):
            out = self.backbone(x)
        maps = [out.intermediates[f"block{i}"] for i in self.out_indices]
        return (*maps, out.dense)
