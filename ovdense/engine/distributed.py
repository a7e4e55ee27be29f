"""torch.distributed set-up for ``torchrun`` launches (no process management of our own).

``torchrun --nproc-per-node N tools/train.py ...`` (or ``torchrun --nproc-per-node N -m ovdense
train ...``) sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` reads them and joins the group: gloo on CPU, nccl on
GPU, each process on the GPU of its ``LOCAL_RANK``. A plain ``python tools/train.py`` run is a
world of one and initialises nothing.

This is the one set-up of every part of ovdense that runs under torchrun: the trainer
(:class:`ovdense.engine.Trainer`) and the benchmark evaluation
(:func:`ovdense.evaluation.runner.run_eval`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "barrier",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_main_process",
    "shutdown_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes checkpoints and logs."""
        return self.rank == 0

    def local_device(self, device: str | torch.device | None = None) -> torch.device:
        """The torch device of this process for a device string.

        ``"cuda"`` without an index (and ``None`` when a GPU is visible) becomes
        ``cuda:<local_rank>``, the GPU torchrun gave this process (``cuda:0`` in a world of
        one); anything else (``"cpu"``, ``"cuda:1"``) is kept as given.
        """
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            return torch.device("cuda", self.local_rank)
        return dev


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"Environment variable {name}={value!r} is not an integer; launch with torchrun "
            "(python -m torch.distributed.run) or unset it."
        ) from None


def init_distributed(
    backend: str | None = None, *, device: str | torch.device | None = None
) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    Does nothing when ``WORLD_SIZE`` is unset or 1, or when the group is already initialised
    (then the existing group is described).

    Args:
        backend: ``"nccl"`` / ``"gloo"``. Default: nccl when the processes run on GPUs (the
            type of ``device`` if given, else whether CUDA is available), gloo otherwise.
        device: The device the caller will run on (``"cpu"``, ``"cuda"``, ``"cuda:N"``); only
            chooses the default backend. :meth:`DistInfo.local_device` turns it into this
            process's ``torch.device``.

    Returns:
        This process's rank, the world size and the local rank (GPU index on its node).
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size <= 1:
        return DistInfo(0, 1, local_rank)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed.")
    if backend is None:
        on_gpu = (
            torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
        )
        backend = "nccl" if on_gpu else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank)


def shutdown_distributed() -> None:
    """Leave the process group, if one was joined (the end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process of the group (nothing outside a group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def get_rank() -> int:
    """Rank of this process (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0."""
    return get_rank() == 0
