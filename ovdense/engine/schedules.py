"""Learning-rate schedules as multipliers of the base learning rate, per iteration.

A schedule is a callable ``schedule(iteration) -> float`` meant for
:class:`torch.optim.lr_scheduler.LambdaLR` (stepped once per optimizer step, so its "epoch" is
the iteration). Its attributes are plain numbers, so ``LambdaLR.state_dict()`` (which stores
them) loads with ``torch.load(..., weights_only=True)``.

Example config::

    lr_scheduler = L(WarmupCosine)(max_iter=2000, warmup_iters=100)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

__all__ = ["WarmupCosine", "WarmupStep", "build_lr_scheduler"]


def _warmup(iteration: int, warmup_iters: int, warmup_factor: float) -> float:
    """Linear ramp from ``warmup_factor`` (iteration 0) to 1 (iteration ``warmup_iters``)."""
    if iteration >= warmup_iters:
        return 1.0
    alpha = iteration / warmup_iters
    return warmup_factor + (1.0 - warmup_factor) * alpha


def _check_warmup(warmup_iters: int, warmup_factor: float) -> None:
    if warmup_iters < 0:
        raise ValueError(f"warmup_iters must be >= 0, got {warmup_iters}.")
    if not 0.0 <= warmup_factor <= 1.0:
        raise ValueError(f"warmup_factor must be in [0, 1], got {warmup_factor}.")


class WarmupCosine:
    """Linear warmup, then cosine decay from 1 to ``min_factor`` at ``max_iter``.

    ``f(i) = warmup_factor + (1 - warmup_factor) * i / warmup_iters`` for ``i < warmup_iters``,
    then ``min_factor + (1 - min_factor) * (1 + cos(pi * p)) / 2`` with
    ``p = (i - warmup_iters) / (max_iter - warmup_iters)`` clamped to ``[0, 1]``.

    Args:
        max_iter: Iteration at which the cosine reaches ``min_factor`` (the training length).
        warmup_iters: Length of the linear warmup (0: none).
        warmup_factor: Multiplier at iteration 0 of the warmup.
        min_factor: Final multiplier.
    """

    def __init__(
        self,
        max_iter: int,
        warmup_iters: int = 0,
        warmup_factor: float = 0.001,
        min_factor: float = 0.0,
    ) -> None:
        _check_warmup(warmup_iters, warmup_factor)
        if max_iter <= warmup_iters:
            raise ValueError(
                f"max_iter ({max_iter}) must be larger than warmup_iters ({warmup_iters})."
            )
        self.max_iter = int(max_iter)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.min_factor = float(min_factor)

    def __call__(self, iteration: int) -> float:
        """The learning-rate multiplier at ``iteration``."""
        if iteration < self.warmup_iters:
            return _warmup(iteration, self.warmup_iters, self.warmup_factor)
        progress = (iteration - self.warmup_iters) / (self.max_iter - self.warmup_iters)
        progress = min(max(progress, 0.0), 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_factor + (1.0 - self.min_factor) * cosine

    def __repr__(self) -> str:
        return (
            f"WarmupCosine(max_iter={self.max_iter}, warmup_iters={self.warmup_iters}, "
            f"warmup_factor={self.warmup_factor}, min_factor={self.min_factor})"
        )


class WarmupStep:
    """Linear warmup, then multiply by ``gamma`` at each of ``steps``.

    ``f(i) = warmup(i) * gamma ** k`` where ``k`` is the number of steps ``<= i``.

    Args:
        steps: Increasing iterations at which the learning rate is multiplied by ``gamma``.
        gamma: Decay factor per step.
        warmup_iters: Length of the linear warmup (0: none).
        warmup_factor: Multiplier at iteration 0 of the warmup.
    """

    def __init__(
        self,
        steps: Sequence[int],
        gamma: float = 0.1,
        warmup_iters: int = 0,
        warmup_factor: float = 0.001,
    ) -> None:
        _check_warmup(warmup_iters, warmup_factor)
        steps = [int(s) for s in steps]
        if steps != sorted(steps):
            raise ValueError(f"steps must be increasing, got {steps}.")
        self.steps = steps
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)

    def __call__(self, iteration: int) -> float:
        """The learning-rate multiplier at ``iteration``."""
        decay = self.gamma ** bisect.bisect_right(self.steps, iteration)
        return _warmup(iteration, self.warmup_iters, self.warmup_factor) * decay

    def __repr__(self) -> str:
        return (
            f"WarmupStep(steps={self.steps}, gamma={self.gamma}, "
            f"warmup_iters={self.warmup_iters}, warmup_factor={self.warmup_factor})"
        )


def build_lr_scheduler(optimizer: Optimizer, schedule: object) -> LRScheduler:
    """Turn a schedule into a per-iteration scheduler of ``optimizer``.

    Args:
        optimizer: The optimizer whose learning rates are scaled.
        schedule: A multiplier callable (``WarmupCosine``, ``WarmupStep``, any
            ``f(iteration) -> float``), or an already built ``LRScheduler`` (returned as is).

    Returns:
        The scheduler; call ``step()`` once per optimizer step.

    Raises:
        TypeError: When ``schedule`` is neither.
    """
    if isinstance(schedule, LRScheduler):
        return schedule
    if callable(schedule):
        return LambdaLR(optimizer, lr_lambda=schedule)
    raise TypeError(
        f"lr_scheduler must be a multiplier callable such as L(WarmupCosine)(max_iter=...) or a "
        f"torch LRScheduler, got {type(schedule).__name__}."
    )
