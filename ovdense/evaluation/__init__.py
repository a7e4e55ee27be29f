"""Evaluation: the evaluator protocol and the semantic-segmentation evaluator."""

from .base import DatasetEvaluator, DatasetEvaluators
from .sem_seg import SemSegEvaluator, compute_sem_seg_metrics

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "SemSegEvaluator",
    "compute_sem_seg_metrics",
]
