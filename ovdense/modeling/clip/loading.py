"""Loading open_clip models the real way: pretrained tags, local files, objects, custom configs.

Every CLIP in ovdense comes from :func:`load_clip`. It returns a plain open_clip model (``CLIP`` or
``CustomTextCLIP``) in eval mode with two attributes ovdense relies on:

- ``ovdense_id``: a string identifying architecture + weights (used to key the text cache);
- ``ovdense_tokenizer``: the open_clip tokenizer that matches the model.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from ...utils.registry import unknown_name_message
from ...utils.weights import (
    CheckpointFormatError,
    WeightsUnavailableError,
    check_weights_file,
    unreachable_reason,
)
from .bundled import bundled_weights
from .eva_convert import create_model_from_checkpoint, read_checkpoint

__all__ = ["WeightsUnavailableError", "load_clip", "model_fingerprint", "weights_need_quick_gelu"]


_CHECKPOINT_HINT = "expected an open_clip checkpoint file (.bin, .pt, .pth or .safetensors)"


def _download_failed_message(model_name: str, pretrained: str, reason: str) -> str:
    return (
        f"Could not download the '{pretrained}' weights for {model_name} ({reason}); "
        "if this machine is offline, download the open_clip checkpoint elsewhere and pass its "
        f"path as well: checkpoint='/path/to/open_clip_pytorch_model.bin' (the tag '{pretrained}' "
        "then only names the architecture of the file's weights; tools: --checkpoint FILE, or the "
        "override model.clip.checkpoint=FILE)."
    )


def _check_model_name(model_name: str) -> None:
    if model_name.startswith(("hf-hub:", "local-dir:")):
        return
    names = open_clip.list_models()
    if model_name not in names:
        raise KeyError(unknown_name_message("open_clip model", model_name, names))


def _check_pretrained_tag(model_name: str, pretrained: str) -> None:
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        hint = (
            " If this is a file, it does not exist."
            if os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))
            else ""
        )
        raise KeyError(
            unknown_name_message(f"pretrained tag for {model_name}", pretrained, tags or ["<none>"])
            + hint
        )


def _check_weights_reachable(model_name: str, tag: str, cache_dir: str | None) -> None:
    """Fail at once (instead of minutes of download retries) when the weights of a tag are not
    cached locally and their host cannot be reached."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    hub, url = cfg.get("hf_hub", ""), cfg.get("url", "")
    repo, filename = (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)
    candidates = [filename] if filename else []
    candidates += ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    reason = unreachable_reason(
        hf_repo=repo or None,
        hf_filenames=candidates,
        url=url or None,
        url_cache_dir=cache_dir,
        cache_dir=cache_dir,
    )
    if reason is not None:
        raise WeightsUnavailableError(_download_failed_message(model_name, tag, reason))


def _file_id(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def model_fingerprint(model: nn.Module) -> str:
    """A content hash of a model's parameters (used when a model carries no ``ovdense_id``)."""
    h = hashlib.sha1()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return "sha1:" + h.hexdigest()


def _plain(value: Any) -> Any:
    """A deep copy of ``value`` with every mapping a ``dict`` and every list-like a list
    (tuples stay tuples): open_clip reads its architecture config as plain Python."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


def load_clip(
    model_name: str | None = None,
    pretrained: str | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    config: dict[str, Any] | None = None,
    model: nn.Module | None = None,
    quick_gelu: bool | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Build an open_clip model from exactly one source.

    Args:
        model_name: open_clip architecture name (``"ViT-B-16"``, ``"hf-hub:org/repo"``, ...).
        pretrained: open_clip weight tag for ``model_name`` (``"openai"``, ``"laion2b_s34b_b88k"``,
            ``"metaclip_400m"``...). Downloaded through open_clip; fails with one clear sentence
            (``WeightsUnavailableError``) when the machine is offline. Tags shipped with ovdense
            (:mod:`ovdense.modeling.bundled`, e.g. ``("ovdense-tiny-vit", "shapes")``) load from
            the package, offline. The tag also fixes the architecture its weights were trained
            with: OpenAI weights get QuickGELU even under a name without ``-quickgelu``.
        checkpoint: a local open_clip checkpoint file (``.bin``/``.pt``/``.safetensors``) for
            ``model_name``; loaded with ``weights_only=True``. May be given *with* ``pretrained``:
            the file then holds that tag's weights (e.g. downloaded on another machine) and the
            tag only decides the architecture (QuickGELU or not); nothing is downloaded.
        config: a custom architecture config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``,
            optional ``quick_gelu``) for a randomly initialised model, e.g. tiny test models.
        model: an open_clip model object the caller already has (returned as is, in eval mode).
        quick_gelu: ``None`` (default): the activation the weights were trained with — QuickGELU
            when the ``pretrained`` tag says so (all OpenAI weights) or the name ends in
            ``-quickgelu``, else GELU. ``True``/``False`` force it (a file of OpenAI weights given
            without its tag needs ``True``, or the ``-quickgelu`` name, or ``pretrained="openai"``).
        device: where to put the model.
        cache_dir: open_clip download cache.
        seed: with ``config``, seed the random initialisation (the same model in every
            process, e.g. under torchrun); the global RNG state is left untouched.

    Returns:
        The open_clip model (``CLIP`` or ``CustomTextCLIP``), eval mode, with ``ovdense_id`` and
        ``ovdense_tokenizer`` attributes.
    """
    sources = {
        "pretrained": pretrained is not None and checkpoint is None,
        "checkpoint": checkpoint is not None,
        "config": config is not None,
        "model": model is not None,
    }
    chosen = [k for k, v in sources.items() if v]
    if pretrained is not None and "pretrained" not in chosen:
        chosen.append("pretrained")
    if len(chosen) > 1 and chosen != ["checkpoint", "pretrained"]:
        raise ValueError(
            f"Give one weight source, got {chosen}: "
            "pretrained (a tag), checkpoint (a file, optionally with the tag of its weights), "
            "config (random init) or model (an object)."
        )
    clip: Any  # the open_clip model (untyped); ovdense_id / ovdense_tokenizer are set on it
    if model is not None:
        clip = model
        if not hasattr(clip, "ovdense_id"):
            clip.ovdense_id = f"{type(clip).__name__}:{model_fingerprint(clip)}"
        if not hasattr(clip, "ovdense_tokenizer"):
            clip.ovdense_tokenizer = _default_tokenizer(clip, model_name)
        return clip.to(device).eval()

    if config is not None:
        cfg = _plain(config)  # also a config system's mapping (OmegaConf) -> plain dicts
        if quick_gelu is not None:
            cfg["quick_gelu"] = quick_gelu
        model_cls = (
            open_clip.CustomTextCLIP
            if "hf_model_name" in cfg.get("text_cfg", {})
            else open_clip.CLIP
        )
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            clip = model_cls(**cfg)
        clip.ovdense_id = f"config:{model_fingerprint(clip)}"
        clip.ovdense_tokenizer = _default_tokenizer(clip, None)
        return clip.to(device).eval()

    if model_name is None:
        raise ValueError(
            "load_clip needs model_name (e.g. 'ViT-B-16') unless config or model is given."
        )
    _check_model_name(model_name)
    bundled = bundled_weights(model_name, pretrained)
    if pretrained is not None and bundled is None:
        _check_pretrained_tag(model_name, pretrained)
    if quick_gelu is None:
        quick_gelu = weights_need_quick_gelu(model_name, pretrained)
    shipped = bundled if checkpoint is None else None
    if shipped is not None:  # a tag whose weights ship with ovdense: no download
        checkpoint = shipped
    kwargs: dict[str, Any] = {"device": device, "cache_dir": cache_dir, "weights_only": True}
    if quick_gelu:
        kwargs["force_quick_gelu"] = True
    elif model_name.endswith("-quickgelu"):
        raise ValueError(
            f"quick_gelu=False contradicts the architecture name {model_name!r}; drop the "
            "'-quickgelu' suffix instead."
        )
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        check_weights_file(path, what="CLIP checkpoint", hint=_CHECKPOINT_HINT)
        try:
            clip = create_model_from_checkpoint(model_name, path, **kwargs)  # + EVA-CLIP names
        except CheckpointFormatError:
            raise  # already says what is wrong and what to do
        except Exception as err:  # noqa: BLE001 - any other load failure here is a mismatch
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            guess = _matching_architectures(path)
            if model_name in guess:  # the sizes fit: something else is wrong with the file
                hint = "its sizes fit this architecture, so the file itself is at fault"
            elif guess:
                hint = f"it fits {', '.join(guess[:4])}: pass that as model_name (--model)"
            else:
                hint = "check model_name (--model)"
            raise CheckpointFormatError(
                f"Could not load {path} into open_clip {model_name}: the checkpoint does not "
                f"match this architecture; {hint}. Details: {detail[:300]}"
            ) from None
        source = _file_id(path) if shipped is None else f"{pretrained}:{_file_id(path)}"
        clip.ovdense_id = f"{model_name}:{source}:qg={bool(quick_gelu)}"
    else:
        if pretrained is not None:
            _check_weights_reachable(model_name, pretrained, cache_dir)
        try:
            clip = open_clip.create_model(model_name, pretrained=pretrained, **kwargs)
        except (OSError, ConnectionError, TimeoutError) as err:
            raise WeightsUnavailableError(
                _download_failed_message(model_name, str(pretrained), type(err).__name__)
            ) from None
        except RuntimeError as err:
            # open_clip / huggingface_hub wrap network failures in RuntimeError subclasses.
            text = f"{type(err).__name__}: {err}".lower()
            if any(
                s in text for s in ("offline", "connect", "download", "resolve", "network", "url")
            ):
                raise WeightsUnavailableError(
                    _download_failed_message(model_name, str(pretrained), type(err).__name__)
                ) from None
            raise
        clip.ovdense_id = f"{model_name}:{pretrained}:qg={bool(quick_gelu)}"
    clip.ovdense_tokenizer = _default_tokenizer(clip, model_name)
    return clip.eval()


def weights_need_quick_gelu(model_name: str, pretrained: str | None) -> bool:
    """Whether the weights named by ``(model_name, pretrained)`` were trained with QuickGELU.

    True for a ``-quickgelu`` architecture name and for every tag whose open_clip pretrained
    config says ``quick_gelu`` (all OpenAI weights: ``("ViT-B-16", "openai")`` ...). open_clip
    itself only warns when such a tag is loaded into a GELU architecture; ovdense builds the
    architecture the weights were trained with. ``hf-hub:`` models carry their own config.
    """
    if model_name.endswith("-quickgelu"):
        return True
    if pretrained is None or model_name.startswith(("hf-hub:", "local-dir:")):
        return False
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
    return bool(cfg.get("quick_gelu", False))


def _tower_signature(cfg: dict[str, Any]) -> tuple | None:
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if "timm_model_name" in vision or "hf_model_name" in text or "layers" not in vision:
        return None
    layers = vision["layers"]
    layers = sum(layers) if isinstance(layers, list | tuple) else layers
    return (cfg.get("embed_dim"), vision.get("width"), layers, vision.get("patch_size"),
            text.get("width"), text.get("layers"))  # fmt: skip


def _matching_architectures(path: Path) -> list[str]:
    """open_clip names whose ViT/text-transformer sizes fit the checkpoint (best effort)."""
    try:
        sd = read_checkpoint(path, mmap=True)
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        conv = sd["visual.conv1.weight"]
        vis_layers = len(
            {k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")}
        )
        txt_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
        found = (sd["text_projection"].shape[1], conv.shape[0], vis_layers, conv.shape[-1],
                 sd["token_embedding.weight"].shape[1], txt_layers)  # fmt: skip
    except Exception:  # noqa: BLE001 - only a hint: no guess for unusual files
        return []
    return [
        name
        for name in open_clip.list_models()
        if _tower_signature(open_clip.get_model_config(name) or {}) == found
    ]


def _default_tokenizer(clip: nn.Module, model_name: str | None) -> Any:
    context_length = getattr(clip, "context_length", None)
    if context_length is None and hasattr(clip, "text"):
        context_length = getattr(clip.text, "context_length", 77)
    if model_name is not None:
        try:
            return open_clip.get_tokenizer(model_name, context_length=context_length)
        except Exception:  # noqa: BLE001 - unknown names fall back to CLIP's BPE tokenizer
            pass
    return open_clip.SimpleTokenizer(context_length=context_length or 77)
