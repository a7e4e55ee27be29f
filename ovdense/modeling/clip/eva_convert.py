"""EVA-CLIP (and CLIPSelf) checkpoints -> open_clip ``EVA02-*`` models.

CLIPSelf's released EVA02 checkpoints use the key names of the original EVA-CLIP code
(``visual.blocks.0.attn.q_proj.weight``, ``visual.blocks.0.attn.q_bias``, ``visual.rope.freqs_cos``,
``visual.head.weight``, ``text.transformer...``, ``logit_scale``), sometimes nested under
``state_dict`` / ``model`` / ``module``, with a DDP ``module.`` prefix, or holding only the image
tower (with or without the ``visual.`` prefix). open_clip's ``EVA02-B-16`` / ``EVA02-L-14-336``
wrap a timm ``Eva`` and expect ``visual.trunk.*`` (timm names). The image tower is renamed by
timm's own ``timm.models.eva.checkpoint_filter_fn`` (``q_bias`` -> ``q_proj.bias``,
``mlp.ffn_ln`` -> ``mlp.norm``, ``attn.inner_attn_ln`` -> ``attn.norm``, ``mlp.w1/w2/w3`` ->
``mlp.fc1_g/fc1_x/fc2``, RoPE buffers dropped, position / patch embeddings resampled when the
grid differs); the text tower and ``logit_scale`` keep their names.

Layouts recognised by :func:`checkpoint_layout`:

=================== ==========================================================================
``open_clip``        ``visual.trunk.*`` + text (what open_clip itself reads)
``open_clip_visual`` ``trunk.*`` / ``visual.trunk.*`` only (an image tower in open_clip names)
``eva_clip``         ``visual.blocks.*`` + text (EVA-CLIP / CLIPSelf)
``eva_clip_visual``  ``blocks.*`` or ``visual.blocks.*`` without a text tower
=================== ==========================================================================

Visual-only checkpoints cannot make a whole CLIP (the segmentors need the text tower):
:func:`load_eva_clip_weights` loads them into a model whose text tower you already have
(``load_clip("EVA02-B-16", "merged2b_s8b_b131k")``), and ``tools/convert_eva_clip.py ...
--text-from FULL_CHECKPOINT`` writes one complete open_clip file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import open_clip
from torch import Tensor, nn

from ...utils.weights import CheckpointFormatError, flatten_state_dict, read_state_dict
from .towers import is_eva_tower

__all__ = [
    "CheckpointFormatError",
    "checkpoint_layout",
    "convert_eva_clip_state_dict",
    "create_model_from_checkpoint",
    "load_eva_clip_weights",
    "read_checkpoint",
]

logger = logging.getLogger(__name__)


_NESTING = ("state_dict", "model", "module", "model_ema")
_TEXT_PREFIXES = ("text_projection", "positional_embedding", "token_embedding", "transformer")


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict[str, Tensor]:
    """Read a checkpoint file (``torch.save`` with ``weights_only=True``, or ``.safetensors``)
    into a flat ``name -> tensor`` dict (see the module doc for the nesting handled).

    Args:
        mmap: memory-map zip-format torch files (cheap when only the keys are needed).
    """
    return read_state_dict(path, what="CLIP checkpoint", nesting=_NESTING, mmap=mmap)


def checkpoint_layout(sd: Mapping[str, Tensor]) -> str:
    """``"open_clip"``, ``"open_clip_visual"``, ``"eva_clip"``, ``"eva_clip_visual"`` or
    ``"unknown"`` (see the module doc)."""
    keys = list(sd)
    has_text = any(k.startswith("text.") or k.startswith(_TEXT_PREFIXES) for k in keys)
    if any(k.startswith(("visual.trunk.", "trunk.")) for k in keys):
        return "open_clip" if has_text else "open_clip_visual"
    if any(k.startswith(("visual.blocks.", "blocks.")) for k in keys):
        return "eva_clip" if has_text else "eva_clip_visual"
    return "unknown"


def _eva_trunk(model: nn.Module) -> nn.Module:
    if not is_eva_tower(model):
        raise TypeError(
            "EVA-CLIP checkpoints load into open_clip EVA02 models (e.g. 'EVA02-B-16', "
            f"'EVA02-L-14-336'); got {type(getattr(model, 'visual', model)).__name__} as the "
            "image tower."
        )
    clip: Any = model  # an open_clip model (untyped)
    return clip.visual.trunk


def convert_eva_clip_state_dict(sd: Mapping[str, Any], model: nn.Module) -> dict[str, Tensor]:
    """Rename an EVA-CLIP (or CLIPSelf) state dict to ``model``'s open_clip names.

    Args:
        sd: the checkpoint (any layout of :func:`checkpoint_layout`; nesting and ``module.``
            prefixes are handled).
        model: the open_clip model with an EVA tower that will receive it (position / patch
            embeddings are resampled to its grid when they differ).

    Returns:
        open_clip names: ``visual.trunk.*`` plus, for full checkpoints, the text tower named as
        ``model`` expects and ``logit_scale``. A visual-only input gives ``visual.*`` keys only.

    Raises:
        TypeError: ``model`` has no EVA tower.
        ValueError: ``sd`` is in none of the known layouts.
    """
    from timm.models.eva import checkpoint_filter_fn

    trunk = _eva_trunk(model)
    flat = flatten_state_dict(sd, nesting=_NESTING)
    layout = checkpoint_layout(flat)
    if layout == "unknown":
        raise ValueError(
            "Not an EVA-CLIP / open_clip EVA checkpoint: found neither 'visual.blocks.*' / "
            f"'blocks.*' nor 'visual.trunk.*' keys (first keys: {sorted(flat)[:5]})."
        )
    visual_only = layout.endswith("_visual")
    visual: dict[str, Tensor] = {}
    rest: dict[str, Tensor] = {}
    for k, v in flat.items():
        if k.startswith("visual."):
            visual[k[len("visual.") :]] = v
        elif visual_only:
            visual[k] = v
        else:
            rest[k] = v
    if layout.startswith("open_clip"):
        out = {f"visual.{k}": v for k, v in visual.items()}
    else:
        renamed = checkpoint_filter_fn(visual, trunk)
        out = {f"visual.trunk.{k}": v for k, v in renamed.items()}
    if visual_only:
        return out
    if hasattr(model, "text"):  # CustomTextCLIP (open_clip's EVA02 configs)
        if "text_projection" in rest:
            rest = open_clip.model.convert_to_custom_text_state_dict(rest)
    else:  # CLIP with the text tower at the top level
        rest = {k[len("text.") :] if k.startswith("text.") else k: v for k, v in rest.items()}
    scale = rest.get("logit_scale")
    clip: Any = model  # an open_clip model (untyped)
    if scale is not None and scale.ndim != clip.logit_scale.ndim:
        rest["logit_scale"] = scale.reshape(clip.logit_scale.shape)
    out.update(rest)
    return out


def _load_strict(module: nn.Module, sd: dict[str, Tensor], what: str, source: str) -> None:
    expected = set(module.state_dict())
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected:
        raise CheckpointFormatError(
            f"{source} does not fit the {what}: {len(missing)} missing keys {missing[:4]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:4]} (a checkpoint of another "
            "architecture? check model_name, e.g. EVA02-B-16 vs EVA02-L-14-336)."
        )
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise CheckpointFormatError(
            f"{source} does not fit the {what} (tensor shapes differ: a checkpoint of another "
            f"architecture? check model_name): {detail}"
        ) from None


def load_eva_clip_weights(
    model: nn.Module, checkpoint: str | os.PathLike | Mapping[str, Any]
) -> nn.Module:
    """Load an EVA-CLIP / CLIPSelf / open_clip EVA checkpoint into an open_clip EVA02 model.

    A full checkpoint replaces every weight; a visual-only one replaces the image tower and
    keeps ``model``'s text tower (e.g. ``load_clip("EVA02-B-16", "merged2b_s8b_b131k")``, the
    text tower CLIPSelf pairs with its distilled image towers).

    Args:
        model: open_clip model with an EVA tower (modified in place).
        checkpoint: a file path or a state dict.

    Returns:
        ``model``.

    Raises:
        ValueError: keys or shapes do not fit (names missing / unexpected keys).
    """
    source = "the state dict"
    if not isinstance(checkpoint, Mapping):
        source = str(checkpoint)
        checkpoint = read_checkpoint(checkpoint)
    sd = convert_eva_clip_state_dict(checkpoint, model)
    if checkpoint_layout(flatten_state_dict(checkpoint, nesting=_NESTING)).endswith("_visual"):
        visual = {k[len("visual.") :]: v for k, v in sd.items()}
        clip: Any = model  # an open_clip model (untyped)
        _load_strict(clip.visual, visual, "image tower", source)
    else:
        _load_strict(model, sd, "model", source)
    return model


def create_model_from_checkpoint(
    model_name: str, path: str | os.PathLike, **kwargs: Any
) -> nn.Module:
    """``open_clip.create_model(model_name, pretrained=path, **kwargs)`` that also reads
    EVA-CLIP / CLIPSelf checkpoints for open_clip EVA02 architectures.

    Architectures without a timm tower go straight to open_clip (the file is not read here);
    for timm towers the keys are peeked at (memory-mapped): open_clip-format files go to
    open_clip, EVA-CLIP-named ones are converted (:func:`convert_eva_clip_state_dict`).

    Raises:
        ValueError: a visual-only checkpoint (says how to add a text tower), or keys / shapes
            that do not fit ``model_name``.
    """
    cfg = open_clip.get_model_config(model_name) or {}
    timm_name = str(cfg.get("vision_cfg", {}).get("timm_model_name") or "")
    if not timm_name:  # open_clip's own towers: nothing to convert, the file is not read here
        return open_clip.create_model(model_name, pretrained=str(path), **kwargs)
    layout = checkpoint_layout(read_checkpoint(path, mmap=True))
    if layout in ("open_clip", "unknown"):
        return open_clip.create_model(model_name, pretrained=str(path), **kwargs)
    if layout.endswith("_visual"):
        raise CheckpointFormatError(
            f"{path} holds only an image tower ({layout}); a CLIP also needs the text tower. "
            f"Either load it into a full model: load_eva_clip_weights(load_clip('{model_name}', "
            f"'<pretrained tag>'), '{path}'), or write one complete file: python "
            f"tools/convert_eva_clip.py {path} OUT.pt --model {model_name} --text-from "
            "FULL_EVA_CLIP_CHECKPOINT."
        )
    kwargs.pop("weights_only", None)
    model = open_clip.create_model(model_name, pretrained=None, **kwargs)
    load_eva_clip_weights(model, path)
    logger.info("Loaded EVA-CLIP checkpoint %s into open_clip %s.", path, model_name)
    return model
