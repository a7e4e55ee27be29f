"""CAT-Seg's released checkpoints (KU-CVLAB/CAT-Seg, detectron2) <-> ovdense's names.

The official ``model_final.pth`` (ViT-B/16 and ViT-L/14-336, trained on COCO-Stuff) is a
detectron2 checkpoint ``{"model": state_dict, ...}`` of the ``CATSeg`` meta-architecture. Its
state dict holds

=================================================== ==========================================
``sem_seg_head.predictor.clip_model.*``              the whole fine-tuned CLIP in OpenAI's
                                                     layout, each attention's packed projection
                                                     split into ``attn.q_proj_weight``,
                                                     ``attn.k_proj_weight``, ``attn.v_proj_weight``
``sem_seg_head.predictor.transformer.*``             the cost-aggregation ``Aggregator``
``upsample1.*``, ``upsample2.*``                      the transposed convs of the two intermediate
                                                     block outputs (the decoder guidance)
=================================================== ==========================================

ovdense holds the same tensors as ``clip.<open_clip name>`` (q, k, v packed into
``attn.in_proj_weight``) and ``head.<CATSegHead name>``: the format of
:meth:`~ovdense.modeling.segmentors.CATSegModel.state_dict`, with every CLIP tensor.
:func:`from_official` and :func:`to_official` are the one mapping, both ways;
:func:`describe_official` reads the architecture off the shapes (CLIP size, head sizes), and
every mismatch is a :class:`~ovdense.utils.weights.CheckpointFormatError` that names the
expected format and what was found. Nothing here imports detectron2.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...utils.weights import CheckpointFormatError, flatten_state_dict, load_weights_file

__all__ = [
    "CLIP_PREFIX",
    "HEAD_PREFIX",
    "OFFICIAL_FORMAT",
    "CATSegOfficialInfo",
    "describe_official",
    "from_official",
    "is_official_catseg",
    "read_catseg_file",
    "to_official",
]

#: Prefixes of the official state dict.
CLIP_PREFIX = "sem_seg_head.predictor.clip_model."
HEAD_PREFIX = "sem_seg_head.predictor.transformer."
_UPSAMPLE = {"upsample1.": "intermediate_up.0.", "upsample2.": "intermediate_up.1."}

#: What an official file is, for messages.
OFFICIAL_FORMAT = (
    "CAT-Seg's detectron2 checkpoint (model_final.pth of KU-CVLAB/CAT-Seg: a 'model' dict with "
    "sem_seg_head.predictor.clip_model.*, sem_seg_head.predictor.transformer.* and "
    "upsample1/2.* tensors)"
)

#: Official CLIP sizes -> (open_clip architecture, the official CLIP_PRETRAINED name).
_CLIP_SIZES = {
    (768, 16, 12): ("ViT-B-16", "ViT-B/16"),
    (1024, 14, 24): ("ViT-L-14-336", "ViT-L/14@336px"),
}

# ovdense head name <-> official Aggregator name (under HEAD_PREFIX), per-layer parts first.
# ``{x}`` is a placeholder (:data:`_SLOTS`) carried from one side to the other; a trailing ``$``
# anchors the name's end. Both directions are compiled from this one table.
_NAME_PAIRS: list[tuple[str, str]] = [
    ("spatial.{l}.block{b}.{n}.", "layers.{l}.swin_block.block_{b}.{n}."),
    ("spatial.{l}.block{b}.{p}.", "layers.{l}.swin_block.block_{b}.attn.{p}."),
    ("spatial.{l}.block{b}.mlp.0.", "layers.{l}.swin_block.block_{b}.mlp.fc1."),
    ("spatial.{l}.block{b}.mlp.2.", "layers.{l}.swin_block.block_{b}.mlp.fc2."),
    ("spatial.{l}.guidance_norm.", "layers.{l}.swin_block.guidance_norm."),
    ("classwise.{l}.{n}.", "layers.{l}.attention.{n}."),
    ("classwise.{l}.{q}.", "layers.{l}.attention.attention.{q}."),
    ("classwise.{l}.mlp.{m}.", "layers.{l}.attention.MLP.{m}."),
    ("classwise.{l}.pad_token$", "layers.{l}.attention.padding_tokens$"),
    ("classwise.{l}.pad_guidance$", "layers.{l}.attention.padding_guidance$"),
    ("cost_embed.", "conv1."),
    ("image_guidance.0.", "guidance_projection.0."),
    ("text_guidance.0.", "text_guidance_projection.0."),
    ("intermediate_proj.{j}.0.", "decoder_guidance_projection.{j}.0."),
    ("decoder{d}.up.", "decoder{d}.up."),
    ("decoder{d}.conv1.", "decoder{d}.conv.double_conv.0."),
    ("decoder{d}.norm1.", "decoder{d}.conv.double_conv.1."),
    ("decoder{d}.conv2.", "decoder{d}.conv.double_conv.3."),
    ("decoder{d}.norm2.", "decoder{d}.conv.double_conv.4."),
    ("out.", "head."),
]
#: what each placeholder of :data:`_NAME_PAIRS` matches
_SLOTS = {
    "l": r"\d+",
    "b": "[12]",
    "n": "norm[12]",
    "p": "[qkv]|proj",
    "q": "[qkv]",
    "m": "[02]",
    "j": "[01]",
    "d": "[12]",
}


def _rule(src: str, dst: str) -> tuple[re.Pattern[str], str]:
    """``src`` as an anchored pattern (placeholders as named groups) and ``dst`` as its
    replacement (placeholders as back-references)."""
    end = "$" if src.endswith("$") else ""
    parts = re.split(r"\{(\w)\}", src.rstrip("$"))
    pattern = "".join(
        f"(?P<{x}>{_SLOTS[x]})" if i % 2 else re.escape(x) for i, x in enumerate(parts)
    )
    return re.compile("^" + pattern + end), re.sub(r"\{(\w)\}", r"\\g<\1>", dst.rstrip("$"))


_COMPILED = [_rule(a, b) for a, b in _NAME_PAIRS]
_INVERSE = [_rule(b, a) for a, b in _NAME_PAIRS]
_PADDING = re.compile(r"layers\.\d+\.attention\.padding_(tokens|guidance)$")
_OFFICIAL_ONLY = re.compile(r"layers\.\d+\.swin_block\.block_[12]\.attn_mask$")


def _head_to_official(name: str) -> str:
    for pat, repl in _COMPILED:
        if pat.match(name):
            return pat.sub(repl, name, count=1)
    raise KeyError(f"No official name for CATSegHead tensor {name!r}.")


def _official_to_head(name: str) -> str:
    for pat, repl in _INVERSE:
        if pat.match(name):
            return pat.sub(repl, name, count=1)
    raise KeyError(name)


def is_official_catseg(state: Mapping[str, Any]) -> bool:
    """Whether a flat state dict is in the official layout (any ``sem_seg_head.predictor.*``
    tensor)."""
    return any(str(k).startswith(("sem_seg_head.predictor.", "upsample1.")) for k in state)


@dataclass(frozen=True)
class CATSegOfficialInfo:
    """The architecture of an official checkpoint, read off its tensor shapes.

    Attributes:
        clip_model: the open_clip architecture (``"ViT-B-16"`` or ``"ViT-L-14-336"``), or
            ``None`` for a CLIP size of no released model (a test model: it loads into a CLIP
            of its size that the caller builds).
        official_name: the official ``CLIP_PRETRAINED`` (``"ViT-B/16"``, ``"ViT-L/14@336px"``),
            or a description of the size.
        vision_width, patch_size, vision_layers, embed_dim: the CLIP's image tower.
        head_kwargs: :class:`~ovdense.modeling.heads.CATSegHead` arguments that the shapes
            fix (``embed_dim``, ``intermediate_dim``, ``num_templates``, ``hidden_dim``,
            ``num_layers``, ``window_size``, ``guidance_dim``, decoder sizes); ``num_heads`` (4)
            and ``pad_len`` (256, or 0 without padding tokens) follow the official configs.
    """

    clip_model: str | None
    official_name: str
    vision_width: int
    patch_size: int
    vision_layers: int
    embed_dim: int
    head_kwargs: dict[str, Any]


def _need(state: Mapping[str, Tensor], key: str, source: str) -> Tensor:
    if key not in state:
        raise CheckpointFormatError(
            f"{source} is not a complete CAT-Seg checkpoint: {key!r} is missing; expected "
            f"{OFFICIAL_FORMAT}."
        )
    return state[key]


def describe_official(
    state: Mapping[str, Tensor], source: str = "The checkpoint"
) -> CATSegOfficialInfo:
    """The architecture of an official state dict (see :class:`CATSegOfficialInfo`).

    Raises:
        CheckpointFormatError: not the official layout, tensors missing, or a prompt-tuned
            model (``PROMPT_DEPTH > 0``).
    """
    if not is_official_catseg(state):
        raise CheckpointFormatError(
            f"{source} is not a CAT-Seg checkpoint: expected {OFFICIAL_FORMAT}, found "
            f"{_found(state)}."
        )
    prompts = [k for k in state if k.endswith("prompt_tokens")]
    if prompts:
        raise CheckpointFormatError(
            f"{source} is a prompt-tuned CAT-Seg model ({prompts[0]}); ovdense loads the "
            "attention fine-tuned models (CLIP_FINETUNE: attention, PROMPT_DEPTH 0) only."
        )
    conv = _need(state, CLIP_PREFIX + "visual.conv1.weight", source)
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    layers = len(
        {
            k.split(".")[6]
            for k in state
            if k.startswith(CLIP_PREFIX + "visual.transformer.resblocks.")
        }
    )
    embed = int(_need(state, CLIP_PREFIX + "visual.proj", source).shape[1])
    size = _CLIP_SIZES.get(
        (width, patch, layers), (None, f"ViT (width {width}, patch {patch}, {layers} blocks)")
    )
    h = HEAD_PREFIX
    cost = _need(state, h + "conv1.weight", source)
    num_layers = len({k.split(".")[4] for k in state if k.startswith(h + "layers.")})
    mask = state.get(h + "layers.0.swin_block.block_2.attn_mask")
    window = 12 if mask is None else int(round(math.sqrt(mask.shape[-1])))
    guidance = _need(state, h + "guidance_projection.0.weight", source)
    dec_proj = [
        _need(state, h + f"decoder_guidance_projection.{i}.0.weight", source) for i in (0, 1)
    ]
    dec_dims = [
        int(_need(state, h + f"decoder{i}.conv.double_conv.0.weight", source).shape[0])
        for i in (1, 2)
    ]
    head_kwargs: dict[str, Any] = {
        "embed_dim": embed,
        "intermediate_dim": width,
        "num_templates": int(cost.shape[1]),
        "hidden_dim": int(cost.shape[0]),
        "num_layers": num_layers,
        "num_heads": 4,
        "window_size": window,
        "pad_len": 256 if (h + "layers.0.attention.padding_tokens") in state else 0,
        "guidance_dim": int(guidance.shape[0]),
        "decoder_dims": tuple(dec_dims),
        "decoder_guidance_dims": tuple(int(t.shape[1]) for t in dec_proj),
        "decoder_guidance_proj_dims": tuple(int(t.shape[0]) for t in dec_proj),
    }
    return CATSegOfficialInfo(size[0], size[1], width, patch, layers, embed, head_kwargs)


def _found(state: Mapping[str, Any]) -> str:
    keys = sorted(str(k) for k in state)
    if not keys:
        return "no tensors"
    heads = sorted({k.split(".")[0] for k in keys})
    return f"{len(keys)} tensors under {', '.join(heads[:6])}{'...' if len(heads) > 6 else ''}"


def from_official(state: Mapping[str, Tensor], source: str = "The checkpoint") -> dict[str, Tensor]:
    """Official state dict -> ``{"clip.<open_clip name>": ..., "head.<CATSegHead name>": ...}``.

    q, k and v projection weights are packed into ``attn.in_proj_weight`` (a packed one is
    kept as it is), the padding tokens ``[1, 1, C]`` become ``[C]``, the Swin blocks' fixed
    attention masks are dropped (recomputed by ovdense).

    Raises:
        CheckpointFormatError: see :func:`describe_official`; also an official tensor that
            has no ovdense name (another architecture variant).
    """
    describe_official(state, source)
    out: dict[str, Tensor] = {}
    split: dict[str, dict[str, Tensor]] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith(CLIP_PREFIX):
            name = key[len(CLIP_PREFIX) :]
            m = re.match(r"^(.*\.attn\.)([qkv])_proj_weight$", name)
            if m:
                split.setdefault(m.group(1), {})[m.group(2)] = value
            else:
                out["clip." + name] = value
        elif key.startswith(HEAD_PREFIX):
            name = key[len(HEAD_PREFIX) :]
            if _OFFICIAL_ONLY.match(name):
                continue
            try:
                ours = _official_to_head(name)
            except KeyError:
                unknown.append(key)
                continue
            out["head." + ours] = value.reshape(-1) if _PADDING.match(name) else value
        elif key.split(".")[0] + "." in _UPSAMPLE:
            out["head." + _UPSAMPLE[key.split(".")[0] + "."] + key.split(".", 1)[1]] = value
        elif key in ("pixel_mean", "pixel_std", "clip_pixel_mean", "clip_pixel_std"):
            continue
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointFormatError(
            f"{source} has tensors that CAT-Seg's released architecture does not: "
            f"{unknown[:5]}; expected {OFFICIAL_FORMAT}."
        )
    for prefix, parts in split.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointFormatError(
                f"{source}: {CLIP_PREFIX}{prefix} has {sorted(parts)} of the q/k/v projection "
                "weights, expected all three (the file is incomplete)."
            )
        out["clip." + prefix + "in_proj_weight"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0
        )
    return out


def to_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``{"clip.*", "head.*"}`` (every CLIP tensor, as :func:`from_official` gives) -> the
    official state dict (the inverse of :func:`from_official`, with the shifted Swin blocks'
    attention masks left out: the official model rebuilds them at construction)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("clip."):
            name = key[5:]
            if name.endswith(".attn.in_proj_weight"):
                q, k, v = value.chunk(3, dim=0)
                base = CLIP_PREFIX + name[: -len("in_proj_weight")]
                out[base + "q_proj_weight"] = q
                out[base + "k_proj_weight"] = k
                out[base + "v_proj_weight"] = v
            elif name != "attn_mask":
                out[CLIP_PREFIX + name] = value
        elif key.startswith("head."):
            name = key[5:]
            up = next((o for o, ours in _UPSAMPLE.items() if name.startswith(ours)), None)
            if up is not None:
                out[up + name[len(_UPSAMPLE[up]) :]] = value
                continue
            official = _head_to_official(name)
            if _PADDING.match(official):
                value = value.reshape(1, 1, -1)
            out[HEAD_PREFIX + official] = value
        else:
            raise KeyError(f"Expected clip.* or head.* keys, got {key!r}.")
    return out


def read_catseg_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """A flat state dict from a CAT-Seg checkpoint file (official or ovdense's), read with
    ``weights_only=True``; a truncated or foreign file raises a
    :class:`~ovdense.utils.weights.CheckpointFormatError` naming it."""
    obj = load_weights_file(
        path,
        what="CAT-Seg checkpoint",
        hint=f"expected {OFFICIAL_FORMAT} or an ovdense CAT-Seg checkpoint",
    )
    return flatten_state_dict(
        obj,
        source=f"CAT-Seg checkpoint {path}",
        hint=f"expected {OFFICIAL_FORMAT} or an ovdense CAT-Seg checkpoint",
        nesting=("model", "state_dict"),
    )
