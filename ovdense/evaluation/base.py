"""The evaluator protocol (detectron2's ``DatasetEvaluator``).

An evaluator sees a whole split in three steps::

    evaluator.reset()                      # once, before the split
    for batch in split:
        evaluator.process(inputs, outputs)  # once per batch (or per image)
    results = evaluator.evaluate()         # once, after the split

``evaluate`` returns a dict of the form ``{task_name: {metric_name: value}}`` (for example
``{"sem_seg": {"mIoU": 41.2, ...}}``), so that the results of several evaluators can be merged
into one dict by :class:`DatasetEvaluators`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "check_class_groups",
    "format_metric",
    "json_safe",
]


class DatasetEvaluator:
    """Base class of the evaluators: accumulate over a split, then summarise.

    Subclasses implement :meth:`process` and :meth:`evaluate` and usually :meth:`reset`. The
    meaning and order of the two arguments of :meth:`process` is defined by each subclass (for
    example :class:`~ovdense.evaluation.SemSegEvaluator` takes ``(predictions, ground_truths)``);
    :class:`DatasetEvaluators` forwards them unchanged, so evaluators combined in one
    :class:`DatasetEvaluators` must agree on them.

    In distributed evaluation every rank calls :meth:`process` on its own shard of the split and
    then every rank calls :meth:`evaluate`, which gathers the ranks' statistics (a collective
    operation: all ranks must call it).
    """

    def reset(self) -> None:
        """Forget everything accumulated so far; called before a new split is processed."""

    def process(self, inputs: Any, outputs: Any) -> None:
        """Accumulate the statistics of one batch (or one image).

        Args:
            inputs: The batch's inputs / ground truth, as defined by the subclass.
            outputs: The model's outputs for the batch, as defined by the subclass.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement process()")

    def evaluate(self) -> dict[str, Any]:
        """Summarise everything processed since the last :meth:`reset`.

        Returns:
            ``{task_name: {metric_name: value}}``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate()")


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators behaving as one: calls are fanned out, result dicts are merged.

    Args:
        evaluators: The evaluators, called in this order.
    """

    def __init__(self, evaluators: Iterable[DatasetEvaluator]) -> None:
        self.evaluators: list[DatasetEvaluator] = list(evaluators)

    def reset(self) -> None:
        """Reset every evaluator."""
        for evaluator in self.evaluators:
            evaluator.reset()

    def process(self, inputs: Any, outputs: Any) -> None:
        """Forward ``(inputs, outputs)`` unchanged to every evaluator's ``process``."""
        for evaluator in self.evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> dict[str, Any]:
        """Merge the result dicts of every evaluator's ``evaluate``.

        Raises:
            ValueError: Two evaluators return the same top-level key.
        """
        results: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for evaluator in self.evaluators:
            for key, value in (evaluator.evaluate() or {}).items():
                if key in results:
                    raise ValueError(
                        f"evaluators {owner[key]} and {type(evaluator).__name__} both return "
                        f"results under {key!r}; give them different task names"
                    )
                results[key] = value
                owner[key] = type(evaluator).__name__
        return results


def format_metric(value: float | None) -> str:
    """A metric for a results table: two decimals, "–" for a missing or NaN value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}"


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN floats replaced by ``None`` (JSON has no NaN), recursively."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def check_class_groups(
    groups: Mapping[str, Sequence[int] | np.ndarray] | None, num_classes: int
) -> dict[str, np.ndarray]:
    """Validate named groups of class indices (e.g. ``{"seen": [...], "held_out": [...]}``).

    Returns:
        ``{name: int64 array}``.

    Raises:
        ValueError: An empty group, or an index outside ``[0, num_classes)`` (negative indices
            are not wrapped).
    """
    out: dict[str, np.ndarray] = {}
    for name, members in (groups or {}).items():
        arr = np.asarray(list(members), dtype=np.int64).reshape(-1)
        if arr.size == 0 or (arr < 0).any() or (arr >= num_classes).any():
            raise ValueError(
                f"class group '{name}' must list class indices in [0, {num_classes}); got "
                f"{list(members)}"
            )
        out[str(name)] = arr
    return out
