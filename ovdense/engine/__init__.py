"""Training: the one train loop of ovdense, its schedules, checkpoints and torchrun set-up."""

from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_last_checkpoint,
    save_checkpoint,
)
from .distributed import DistInfo, get_rank, get_world_size, init_distributed, is_main_process
from .schedules import WarmupCosine, WarmupStep, build_lr_scheduler
from .trainer import (
    DATALOADER_DEFAULTS,
    TRAIN_DEFAULTS,
    Trainer,
    load_train_config,
    merge_train_defaults,
)

__all__ = [
    "DATALOADER_DEFAULTS",
    "TRAIN_DEFAULTS",
    "CheckpointError",
    "DistInfo",
    "Trainer",
    "WarmupCosine",
    "WarmupStep",
    "build_lr_scheduler",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_main_process",
    "load_checkpoint",
    "load_train_config",
    "merge_train_defaults",
    "read_last_checkpoint",
    "save_checkpoint",
]
