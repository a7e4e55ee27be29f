"""Reading weight files and checking that downloadable weights can be had: the one ground-floor
home for both (imports nothing from the rest of ovdense).

- :func:`load_weights_file` reads a ``torch.save`` file (``weights_only=True``, optionally
  memory-mapped, legacy format too) or a ``.safetensors`` file; every failure is one sentence
  naming the file.
- :func:`read_state_dict` turns such a file into a flat ``name -> tensor`` dict (following
  ``state_dict`` / ``model`` / ... nesting, stripping a DDP ``module.`` prefix).
- :func:`check_weights_file` is the cheap early check (no tensor data read).
- :func:`unreachable_reason` says why hub or URL weights cannot be downloaded now (offline mode,
  host unreachable), so callers fail at once with :class:`WeightsUnavailableError` instead of
  minutes of retries.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor

__all__ = [
    "CheckpointFormatError",
    "WeightsUnavailableError",
    "check_weights_file",
    "flatten_state_dict",
    "hf_offline",
    "load_weights_file",
    "read_state_dict",
    "unreachable_reason",
]

_DEFAULT_HINT = "expected a torch (.pt, .pth, .bin) or .safetensors weight file"

#: Keys under which checkpoints commonly nest their state dict.
DEFAULT_NESTING = ("state_dict", "model", "module", "model_ema")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be fetched (offline, firewall, hub down)."""


class CheckpointFormatError(ValueError):
    """A weight file that cannot be used as asked; the message names the file, says what was
    expected and what to pass instead."""


def _existing_file(path: str | os.PathLike, what: str, hint: str) -> Path:
    file = Path(path).expanduser()
    if file.is_dir():
        raise IsADirectoryError(
            f"{what} {file} is a folder; pass the file itself{hint and f' ({hint})'}."
        )
    if not file.is_file():
        raise FileNotFoundError(f"{what} not found: {file}{hint and f' ({hint})'}.")
    return file


def load_weights_file(
    path: str | os.PathLike,
    *,
    what: str = "Checkpoint",
    hint: str = "",
    mmap: bool = False,
) -> Any:
    """Load a weight file safely: ``torch.load(weights_only=True)`` or safetensors.

    Args:
        path: The file.
        what: How to name it in messages (``"CLIP checkpoint"``, ``"FOUND decoder"``...).
        hint: What the file should be, a phrase added to the messages, e.g. ``"expected the
            released last.pt"``.
        mmap: Memory-map zip-format torch files (no tensor data read until used); legacy
            (non-zip) files are then read normally.

    Returns:
        The loaded object (a tensor dict for safetensors).

    Raises:
        FileNotFoundError, IsADirectoryError: no such file / a folder.
        CheckpointFormatError: truncated, corrupt, not a weight file, or holding Python
            objects that ``weights_only=True`` refuses to unpickle.
    """
    file = _existing_file(path, what, hint)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file))
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not (mmap and "mmap can only be used" in str(err)):
                raise
            with open(file, "rb") as fh:
                if fh.read(1) != b"\x80":  # legacy torch files are pickles (PROTO opcode)
                    raise
            return torch.load(file, map_location="cpu", weights_only=True)
    except (PermissionError, FileNotFoundError, IsADirectoryError, CheckpointFormatError):
        raise  # the file system's own answer (a truncated zip can raise other OSErrors)
    except Exception as err:  # noqa: BLE001 - zip / pickle / EOF / header errors
        if "Weights only load failed" in str(err):
            reason = (
                "it holds Python objects that a safe load (weights_only=True) refuses to "
                "unpickle, not plain weights"
            )
        else:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
            reason = f"the file is truncated or not a checkpoint ({type(err).__name__}: {first})"
        raise CheckpointFormatError(
            f"Could not read {what} {file}: {reason}; {hint or _DEFAULT_HINT}."
        ) from None


def check_weights_file(
    path: str | os.PathLike, *, what: str = "Checkpoint", hint: str = ""
) -> None:
    """Fail early, naming the file, when it is missing, a folder, truncated or not a weight
    file. Cheap: zip-format torch files are memory-mapped, safetensors read their header only."""
    file = _existing_file(path, what, hint)
    if file.suffix in (".npz", ".npy"):
        return
    if file.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                f.keys()
        except Exception as err:  # noqa: BLE001
            raise CheckpointFormatError(
                f"Could not read {what} {file}: the file is truncated or not a checkpoint "
                f"({type(err).__name__}); {hint or 'expected a .safetensors weight file'}."
            ) from None
        return
    load_weights_file(file, what=what, hint=hint, mmap=True)


def read_state_dict(
    path: str | os.PathLike,
    *,
    what: str = "Checkpoint",
    hint: str = "",
    nesting: Sequence[str] = DEFAULT_NESTING,
    strip_prefixes: Iterable[str] = ("module.",),
    mmap: bool = False,
) -> dict[str, Tensor]:
    """A flat ``name -> tensor`` dict from a weight file.

    Nested dicts under ``nesting`` keys are followed (up to three levels, only while the
    current level holds no tensors itself); a prefix of ``strip_prefixes`` shared by every key
    is removed (DDP's ``module.``).

    Raises:
        CheckpointFormatError: the file holds no state dict (naming what it holds).
    """
    obj = load_weights_file(path, what=what, hint=hint, mmap=mmap)
    return flatten_state_dict(
        obj, source=f"{what} {path}", hint=hint, nesting=nesting, strip_prefixes=strip_prefixes
    )


def flatten_state_dict(
    obj: Any,
    *,
    source: str = "The checkpoint",
    hint: str = "",
    nesting: Sequence[str] = DEFAULT_NESTING,
    strip_prefixes: Iterable[str] = ("module.",),
) -> dict[str, Tensor]:
    """The flat ``name -> tensor`` dict inside a loaded checkpoint object (see
    :func:`read_state_dict`; ``source`` names it in messages).

    Raises:
        CheckpointFormatError: no state dict, or no tensors in it.
    """
    for _ in range(3):
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in nesting if isinstance(obj.get(k), Mapping)), None)
        if inner is None or any(isinstance(v, Tensor) for v in obj.values()):
            break
        obj = inner
    expected = f"; {hint}" if hint else ""
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{source} does not hold a state dict (name -> tensor) but a "
            f"{type(obj).__name__}{expected}."
        )
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        raise CheckpointFormatError(f"{source} holds no tensors{expected}.")
    for prefix in strip_prefixes:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def hf_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks huggingface_hub never to download."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _host_unreachable(host: str | None) -> bool:
    if not host:
        return False
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return True
    return False


def unreachable_reason(
    *,
    hf_repo: str | None = None,
    hf_filenames: Sequence[str] = (),
    url: str | None = None,
    url_cache_dir: str | os.PathLike | None = None,
    cache_dir: str | None = None,
) -> str | None:
    """Why the weights cannot be fetched now, or ``None`` (cached locally, or host reachable).

    Args:
        hf_repo: Hugging Face hub repository holding the weights.
        hf_filenames: Candidate file names in that repository (any cached one will do).
        url: Direct download URL (used when there is no hub repository).
        url_cache_dir: Where a URL download is cached (file name = the URL's basename).
        cache_dir: Hugging Face cache folder (default: huggingface_hub's).

    Returns:
        ``"HF_HUB_OFFLINE is set"``, ``"<host> unreachable"`` or ``None``.
    """
    if hf_repo:
        from huggingface_hub import try_to_load_from_cache

        for name in hf_filenames:
            if isinstance(try_to_load_from_cache(hf_repo, name, cache_dir=cache_dir), str):
                return None
        if hf_offline():
            return "HF_HUB_OFFLINE is set"
        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    elif url:
        folder = Path(url_cache_dir or Path.home() / ".cache" / "clip")
        if (folder / os.path.basename(url)).is_file():
            return None
        host = urlparse(url).hostname
    else:
        return None
    return f"{host} unreachable" if _host_unreachable(host) else None
