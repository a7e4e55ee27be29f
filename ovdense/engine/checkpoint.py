"""Training checkpoints: atomic writes, ``weights_only`` loading, RNG state as plain data.

A run's output folder holds ``model_{iter:07d}.pt`` files and a ``last_checkpoint`` text file
naming the newest one. Both are written to a temporary file in the same folder and renamed
into place (:func:`ovdense.utils.io.atomic_write`), the checkpoint before the pointer, so a
crash mid-write leaves the previous ``last_checkpoint`` valid.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.io import atomic_write, atomic_write_text
from ..utils.weights import CheckpointFormatError, load_weights_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "LAST_CHECKPOINT",
    "CheckpointError",
    "checkpoint_name",
    "get_rng_state",
    "load_checkpoint",
    "read_last_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

#: Value of the ``"format"`` key that marks a checkpoint written by :func:`save_checkpoint`.
CHECKPOINT_FORMAT = "ovdense.train/1"
#: Name of the pointer file (inside the output folder) holding the newest checkpoint's name.
LAST_CHECKPOINT = "last_checkpoint"
_REQUIRED_KEYS = ("model", "optimizer", "iter")


class CheckpointError(CheckpointFormatError):
    """A checkpoint file that cannot be used (truncated, corrupt or not written by ovdense)."""


def checkpoint_name(iteration: int) -> str:
    """File name of the checkpoint after ``iteration`` optimizer steps."""
    return f"model_{iteration:07d}.pt"


def get_rng_state() -> dict[str, Any]:
    """The torch, numpy, python (and CUDA) RNG states, as tensors and plain types.

    Plain types keep the checkpoint loadable with ``torch.load(..., weights_only=True)``.
    """
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states saved by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(state: dict[str, Any], output_dir: str | os.PathLike, iteration: int) -> Path:
    """Write ``state`` as ``model_{iteration:07d}.pt`` and point ``last_checkpoint`` at it.

    Both files are written atomically, the checkpoint first: after a crash at any point,
    ``last_checkpoint`` names a complete file.

    Args:
        state: The checkpoint content (a ``"format"`` key is added).
        output_dir: The run's output folder.
        iteration: Optimizer steps done.

    Returns:
        The checkpoint's path.
    """
    output_dir = Path(output_dir)
    path = output_dir / checkpoint_name(iteration)
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
    atomic_write_text(output_dir / LAST_CHECKPOINT, path.name + "\n")
    return path


def read_last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``output_dir/last_checkpoint``, or None when there is none.

    Raises:
        CheckpointError: When the pointer names a file that does not exist.
    """
    output_dir = Path(output_dir)
    pointer = output_dir / LAST_CHECKPOINT
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    path = output_dir / name
    if not name or not path.is_file():
        raise CheckpointError(
            f"{pointer} names {name!r}, which does not exist in {output_dir}; write the name of "
            "an existing model_*.pt into it, or delete it to start from scratch."
        )
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, on CPU).

    Args:
        path: The ``model_*.pt`` file.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: When the file does not exist.
        CheckpointError: When it is truncated/corrupt or was not written by the ovdense trainer.
    """
    path = Path(path)
    try:
        ckpt = load_weights_file(path, what="Checkpoint")
    except CheckpointFormatError as e:  # truncated, corrupt or foreign files
        raise CheckpointError(
            f"Checkpoint {path} cannot be read (truncated, corrupt, or not a weights-only torch "
            f"file). Delete it and point {path.parent / LAST_CHECKPOINT} at an earlier "
            "model_*.pt, or train without resume."
        ) from e
    missing = [k for k in _REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or missing:
        what = f"missing {', '.join(missing)}" if missing else "no ovdense trainer format tag"
        raise CheckpointError(
            f"Checkpoint {path} was not written by the ovdense trainer ({what}); resume needs a "
            "model_*.pt from an ovdense training run. To start from foreign weights, load them "
            "into the model in its config instead."
        )
    return ckpt
