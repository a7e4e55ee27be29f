"""Method presets: LazyConfig files shipped in ``ovdense/configs`` and one-line builders.

``configs/`` at the repository root links to the same folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from .config import LazyConfig, instantiate
from .modeling.segmentors import Segmentor
from .utils.registry import unknown_name_message

__all__ = [
    "CONFIGS_DIR",
    "PRESET_KINDS",
    "build_segmentor",
    "check_preset_kind",
    "clip_source_overrides",
    "get_config",
    "get_config_file",
    "list_presets",
    "preset_kind",
]

CONFIGS_DIR = Path(__file__).parent / "configs"

#: Short method names -> preset files.
ALIASES = {
    "maskclip": "seg/maskclip_vitb16.py",
    "sclip": "seg/sclip_vitb16.py",
    "clearclip": "seg/clearclip_vitb16.py",
    "naclip": "seg/naclip_vitb16.py",
    "proxyclip": "seg/proxyclip_vitb16.py",
    "clip_dinoiser": "seg/clip_dinoiser_vitb16.py",
    "catseg": "seg/catseg_vitb16.py",
    "resclip": "seg/resclip_vitb16.py",
    "scclip": "seg/scclip_vitb16.py",
    "corrclip": "seg/corrclip_vitb16.py",
    "sam3": "seg/sam3.py",
    "trident": "seg/trident_vitb16.py",
}


#: Kinds of presets -> the folders of ``ovdense/configs`` holding them: segmentor presets
#: (``--config`` of demo / eval / eval-all, :func:`build_segmentor`; the aliases point there),
#: evaluation configs (a method's paper settings, read by ``ovdense eval``) and training configs
#: (``ovdense train``).
PRESET_KINDS: dict[str, tuple[str, ...]] = {
    "seg": ("seg", "shapes"),
    "eval": ("eval",),
    "train": ("train",),
}

_KIND_WORDS = {"eval": "an evaluation config", "train": "a training config"}


def list_presets(kind: str = "seg") -> list[str]:
    """Preset names of one kind: the short aliases and the ``group/file`` names under
    ``ovdense/configs``.

    Args:
        kind: ``"seg"`` (default: the segmentor presets, i.e. the aliases, ``seg/*`` and
            ``shapes/*``), ``"eval"`` (``eval/*``), ``"train"`` (``train/*``) or ``"all"``
            (every file, aliases first).

    Raises:
        ValueError: Unknown kind.
    """
    if kind != "all" and kind not in PRESET_KINDS:
        raise ValueError(
            f"Unknown preset kind {kind!r}; choose one of {', '.join([*PRESET_KINDS, 'all'])}."
        )
    files = sorted(
        str(p.relative_to(CONFIGS_DIR).with_suffix(""))
        for p in CONFIGS_DIR.rglob("*.py")
        if not p.name.startswith(("base", "_"))
    )
    if kind == "all":
        return sorted(ALIASES) + files
    folders = PRESET_KINDS[kind]
    aliases = sorted(ALIASES) if kind == "seg" else []
    return aliases + [f for f in files if f.split("/")[0] in folders]


def preset_kind(name: str | os.PathLike) -> str | None:
    """``"seg"``, ``"eval"`` or ``"train"`` for a preset shipped in ``ovdense/configs`` (by its
    folder), None for a config file elsewhere.

    Raises:
        KeyError: Unknown preset name.
        FileNotFoundError: A config file that does not exist.
    """
    try:
        rel = get_config_file(name).resolve().relative_to(CONFIGS_DIR.resolve())
    except ValueError:
        return None
    for kind, folders in PRESET_KINDS.items():
        if rel.parts[0] in folders:
            return kind
    return None


def check_preset_kind(name: str | os.PathLike, allowed: Sequence[str] = ("seg",)) -> None:
    """Stop a preset of another kind (a training config given as a segmentor) in one sentence.

    Raises:
        ValueError: ``name`` is a shipped preset whose kind is not in ``allowed``.
        KeyError: Unknown preset name.
        FileNotFoundError: A config file that does not exist.
    """
    kind = preset_kind(name)
    if kind is None or kind in allowed:
        return
    raise ValueError(
        f"'{name}' is {_KIND_WORDS.get(kind, f'a {kind} config')}, not a segmentor preset; "
        "choose one of list_presets('seg') (the command `ovdense presets` lists them)."
    )


def get_config_file(name: str | os.PathLike) -> Path:
    """Resolve a preset alias (``"naclip"``), a ``group/name`` (``"seg/naclip_vitb16"``) or a
    path to a config file."""
    path = Path(name)
    if path.suffix in (".py", ".yaml") and path.is_file():
        return path
    key = str(name)
    rel = ALIASES.get(key, key if key.endswith(".py") else key + ".py")
    found = CONFIGS_DIR / rel
    if found.is_file():
        return found
    if path.suffix in (".py", ".yaml"):
        raise FileNotFoundError(f"Config file not found: {path}")
    raise KeyError(unknown_name_message("preset", key, list_presets("all")))


def get_config(name: str | os.PathLike, overrides: Sequence[str] = ()) -> DictConfig:
    """Load a preset (see :func:`get_config_file`) and apply ``key=value`` overrides."""
    cfg = LazyConfig.load(str(get_config_file(name)))
    return LazyConfig.apply_overrides(cfg, list(overrides)) if overrides else cfg


def _override_list(values: Mapping[str, Any]) -> list[str]:
    return [
        f"model.{k}={v!r}" if isinstance(v, str) else f"model.{k}={v}" for k, v in values.items()
    ]


def clip_source_overrides(
    model: str | None = None,
    pretrained: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    prefix: str = "model.clip",
) -> list[str]:
    """``key=value`` overrides that put a CLIP weight source into a preset's ``load_clip`` node.

    The one rule every tool follows (``build_segmentor``, the demo, ``tools/eval_*``):

    - ``checkpoint`` alone keeps the preset's tag, which then names the *architecture* of the
      file's weights: ``naclip`` + ``checkpoint=ViT-B-16-openai.bin`` builds the QuickGELU tower
      that OpenAI's weights were trained with, exactly as ``pretrained="openai"`` does.
    - ``checkpoint`` with ``pretrained``: the file holds that tag's weights.
    - ``checkpoint`` with another ``model`` (and no ``pretrained``): the preset's tag describes
      the preset's architecture, not this one, so it is dropped (``model`` alone decides).
    - ``pretrained`` alone: download (or read from open_clip's cache) that tag.
    """
    out: list[str] = []
    if model is not None:
        out.append(f"{prefix}.model_name={str(model)!r}")
    if checkpoint is not None:
        out.append(f"{prefix}.checkpoint={str(checkpoint)!r}")
        if pretrained is not None:
            out.append(f"{prefix}.pretrained={str(pretrained)!r}")
        elif model is not None:
            out.append(f"{prefix}.pretrained=None")
    elif pretrained is not None:
        out.append(f"{prefix}.pretrained={str(pretrained)!r}")
    return out


def build_segmentor(
    preset: str | os.PathLike = "naclip",
    *,
    model: str | None = None,
    pretrained: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    device: str | torch.device | None = None,
    **options: Any,
) -> Segmentor:
    """Build a segmentor from a method preset in one line.

    Args:
        preset: ``"maskclip"``, ``"sclip"``, ``"clearclip"``, ``"naclip"``, ``"proxyclip"``,
            ``"clip_dinoiser"``, a segmentor ``group/name`` under ``ovdense/configs``
            (:func:`list_presets`) or a config file path. A training or evaluation config
            (``train/*``, ``eval/*``) is refused with a ``ValueError``.
        model: open_clip architecture replacing the preset's (e.g. ``"ViT-L-14"``).
        pretrained: open_clip weight tag replacing the preset's (e.g. ``"laion2b_s34b_b88k"``).
        checkpoint: local open_clip checkpoint file (use this offline). The preset's tag still
            decides the architecture (QuickGELU for OpenAI weights): see
            :func:`clip_source_overrides`.
        overrides: ``"model.key=value"`` strings, as on the command line.
        device: where to put the model (default: CUDA if available).
        **options: segmentor arguments, e.g. ``logit_scale=50, window=None``, or a head
            registered in :data:`~ovdense.modeling.heads.SEG_HEADS` (``head="my_head"``).

    Example::

        seg = build_segmentor("naclip", checkpoint="ViT-B-16.bin", prob_thd=0.1)
    """
    from .utils.cli import resolve_device

    device = resolve_device(device)  # a CUDA request without a GPU fails before any loading
    check_preset_kind(preset, ("seg",))
    cfg = get_config(preset)
    sources = clip_source_overrides(model, pretrained, checkpoint)
    cfg = LazyConfig.apply_overrides(cfg, [*sources, *_override_list(options), *overrides])
    seg = instantiate(cfg.model)
    return seg.to(device)
