"""The whole Segment Anything model (image encoder, prompt encoder, mask decoder).

:func:`build_sam` builds segment-anything's ``Sam`` the way ``sam_model_registry[kind]`` does,
with the official checkpoint read safely (``weights_only=True``), or with random weights and
changed sizes (``tiny_sam`` for tests and offline demonstrations). The image encoder alone, as a
dense feature extractor, is :class:`~ovdense.modeling.vfm.sam.SAMFeatures`.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import torch
from torch import nn

from ..modeling.vfm.sam import SAM_CHECKPOINTS, SAM_ENCODERS
from ..utils.weights import read_state_dict

__all__ = ["SAM_KINDS", "build_sam", "missing_checkpoint_message", "tiny_sam"]

#: SAM sizes, as segment-anything names them.
SAM_KINDS: tuple[str, ...] = tuple(SAM_ENCODERS)


def missing_checkpoint_message(kind: str, flag: str = "--sam-checkpoint") -> str:
    """One sentence: which file to download for SAM ``kind`` and how to pass it."""
    url = SAM_CHECKPOINTS[kind]
    return (
        f"SAM {kind} needs its checkpoint file: download {url} and pass "
        f"{flag}{'' if flag.endswith('=') else ' '}/path/{os.path.basename(url)}."
    )


def build_sam(
    kind: str = "vit_b",
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = True,
    *,
    img_size: int = 1024,
    patch_size: int = 16,
    prompt_embed_dim: int = 256,
    decoder_mlp_dim: int = 2048,
    decoder_heads: int = 8,
    iou_head_hidden_dim: int = 256,
    mask_in_chans: int = 16,
    **encoder_overrides: Any,
) -> nn.Module:
    """segment-anything's ``Sam`` of size ``kind`` (``"vit_b"``, ``"vit_l"``, ``"vit_h"``).

    With the default sizes this is exactly ``sam_model_registry[kind]``. ``checkpoint`` is the
    official file (``sam_vit_b_01ec64.pth`` ...), read with ``weights_only=True``;
    ``pretrained=False`` without a checkpoint gives random weights. The keyword sizes and
    ``encoder_overrides`` (``ImageEncoderViT`` arguments: ``embed_dim``, ``depth``,
    ``num_heads``, ``global_attn_indexes``, ``window_size``) make smaller models.

    Returns:
        A ``segment_anything.modeling.Sam`` in eval mode.

    Raises:
        ValueError: unknown ``kind``, or ``pretrained`` without a ``checkpoint`` (the message
            names the file to download).
        FileNotFoundError, CheckpointFormatError: the checkpoint is missing or unreadable.
        RuntimeError: the checkpoint does not fit this size (naming the expected file).
    """
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    if kind not in SAM_ENCODERS:
        raise ValueError(f"SAM kind must be one of {SAM_KINDS}, got {kind!r}.")
    if checkpoint is None and pretrained:
        raise ValueError(missing_checkpoint_message(kind, flag="checkpoint="))
    encoder_args: dict[str, Any] = {
        "img_size": img_size,
        "patch_size": patch_size,
        "mlp_ratio": 4,
        "norm_layer": partial(nn.LayerNorm, eps=1e-6),
        "qkv_bias": True,
        "use_rel_pos": True,
        "window_size": 14,
        "out_chans": prompt_embed_dim,
        **SAM_ENCODERS[kind],
    }
    encoder_args.update(encoder_overrides)
    grid = img_size // patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(**encoder_args),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(img_size, img_size),
            mask_in_chans=mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=prompt_embed_dim,
                mlp_dim=decoder_mlp_dim,
                num_heads=decoder_heads,
            ),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    if checkpoint is not None:
        url = SAM_CHECKPOINTS[kind]
        hint = f"expected the official SAM {kind} file {os.path.basename(url)} ({url})"
        state = read_state_dict(checkpoint, what=f"SAM {kind} checkpoint", hint=hint)
        try:
            sam.load_state_dict(state)
        except RuntimeError as err:
            detail = " ".join(str(err).split())[:300]
            raise RuntimeError(
                f"Could not load {checkpoint} into SAM {kind} ({detail}); {hint}."
            ) from None
    return sam.eval()


def tiny_sam(seed: int = 0, img_size: int = 128) -> nn.Module:
    """A tiny randomly initialised SAM (``vit_b`` layout, 32 channels, 2 encoder blocks) built
    from segment-anything's own modules: for tests and offline runs, not for real masks."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_sam(
            "vit_b",
            pretrained=False,
            img_size=img_size,
            prompt_embed_dim=32,
            decoder_mlp_dim=64,
            decoder_heads=2,
            iou_head_hidden_dim=32,
            mask_in_chans=4,
            embed_dim=32,
            depth=2,
            num_heads=2,
            global_attn_indexes=(1,),
            window_size=4,
        )
