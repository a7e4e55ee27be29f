"""Evaluation: the evaluator protocol, semantic segmentation and region classification.

``ovdense.evaluation.runner`` (benchmark runs of segmentors) is imported on demand: it pulls in
the model zoo.
"""

from .base import DatasetEvaluator, DatasetEvaluators
from .regions import RegionAccuracy, evaluate_regions, load_coco_panoptic
from .sem_seg import SemSegEvaluator, compute_sem_seg_metrics

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "RegionAccuracy",
    "SemSegEvaluator",
    "compute_sem_seg_metrics",
    "evaluate_regions",
    "load_coco_panoptic",
]
