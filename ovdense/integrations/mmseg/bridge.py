"""mmseg's ``IoUMetric`` and ovdense's ``SemSegEvaluator`` on the same predictions.

:class:`OVDenseSemSegMetric` is ovdense's evaluator as an mmengine metric: put it next to
``IoUMetric`` in ``test_evaluator`` and both score the same ``pred_sem_seg`` / ``gt_sem_seg``
of every image (its keys are prefixed ``ovdense/``). :func:`evaluate_both` runs the two on
label maps directly.

Where the definitions agree (tested): one confusion count over the split, ground-truth pixels
equal to the ignore index skipped; ``IoU = TP / (TP + FP + FN)``, a class with an empty union
left out of ``mIoU`` (mmseg: NaN, then ``nanmean``); ``Acc = TP / (TP + FN)``, classes without
ground truth left out of ``mAcc``; mmseg's ``aAcc`` is ovdense's ``pAcc``.

Where they differ:

- mmseg rounds ``mIoU`` / ``mAcc`` / ``aAcc`` to two decimals (of a percent); ovdense does not
  (so they agree to 0.005).
- A ground-truth value outside ``[0, K)`` that is not the ignore index: mmseg drops it from the
  class counts but still counts the prediction at that pixel as a false positive; ovdense refuses
  the map (``ValueError`` naming it).
- ``reduce_zero_label``: mmseg 1.x applies it when loading annotations (``LoadAnnotations``
  reads the dataset's flag); ovdense's datasets apply it when reading the label file. Same maps.
- mmseg's ``nan_to_num`` option replaces NaN per-class values before the means are taken (it
  then counts absent classes as that value); ovdense has no such option.
- ovdense also reports ``fwIoU`` and the per-class values in its result; mmseg's ``IoUMetric``
  prints a per-class table and returns only the means (and ``mDice`` / ``mFscore`` on request).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

from ...evaluation.sem_seg import SemSegEvaluator, compute_sem_seg_metrics

__all__ = ["OVDenseSemSegMetric", "evaluate_both"]


@METRICS.register_module()
class OVDenseSemSegMetric(BaseMetric):
    """ovdense's :class:`~ovdense.evaluation.SemSegEvaluator` as an mmengine metric.

    Args:
        ignore_index: Ground-truth value not scored (mmseg's default 255).
        num_classes: Default: ``len(dataset_meta["classes"])``.
    Results: ``mIoU``, ``mAcc``, ``pAcc`` (= mmseg's ``aAcc``), ``fwIoU`` in percent,
    unrounded, prefixed ``ovdense/``; per-class values are logged.
    """

    default_prefix = "ovdense"

    def __init__(
        self,
        ignore_index: int = 255,
        num_classes: int | None = None,
        collect_device: str = "cpu",
        prefix: str | None = None,
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ignore_index = ignore_index
        self.num_classes = num_classes

    def _k(self) -> int:
        if self.num_classes is not None:
            return int(self.num_classes)
        if not self.dataset_meta or "classes" not in self.dataset_meta:
            raise ValueError("OVDenseSemSegMetric needs num_classes or the dataset's classes.")
        return len(self.dataset_meta["classes"])

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        evaluator = SemSegEvaluator(self._k(), self.ignore_index, distributed=False)
        for sample in data_samples:
            pred = sample["pred_sem_seg"]["data"].squeeze(0)
            gt = sample["gt_sem_seg"]["data"].squeeze(0).to(pred.device)
            evaluator.process(pred, gt)
        # one confusion matrix per batch; mmengine gathers them across ranks
        self.results.append(evaluator.confusion_matrix)

    def compute_metrics(self, results: list) -> dict[str, float]:
        confusion = np.sum(np.stack(results), axis=0)
        names = None
        if self.dataset_meta and "classes" in self.dataset_meta:
            classes = [str(c) for c in self.dataset_meta["classes"]]
            names = classes if len(set(classes)) == len(classes) else None
        m = compute_sem_seg_metrics(confusion, names)
        return {k: float(m[k]) for k in ("mIoU", "mAcc", "pAcc", "fwIoU")}


def evaluate_both(
    predictions: Sequence[np.ndarray | torch.Tensor],
    ground_truths: Sequence[np.ndarray | torch.Tensor],
    num_classes: int,
    ignore_index: int = 255,
    class_names: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """mmseg's ``IoUMetric`` and ovdense's ``SemSegEvaluator`` on the same label maps.

    Returns:
        ``{"mmseg": {"mIoU", "mAcc", "aAcc"}, "ovdense": {"mIoU", "mAcc", "pAcc", "fwIoU"}}``
        in percent (mmseg's rounded to two decimals, as ``IoUMetric`` reports them).
    """
    names = list(class_names) if class_names is not None else [f"c{i}" for i in range(num_classes)]
    metric = IoUMetric(ignore_index=ignore_index, iou_metrics=["mIoU"])
    metric.dataset_meta = dict(classes=names)
    evaluator = SemSegEvaluator(num_classes, ignore_index, names, distributed=False)
    for pred, gt in zip(predictions, ground_truths):
        p = torch.as_tensor(np.asarray(pred)).long()
        g = torch.as_tensor(np.asarray(gt)).long()
        sample = {"pred_sem_seg": {"data": p[None]}, "gt_sem_seg": {"data": g[None]}}
        metric.process({}, [sample])
        evaluator.process(p, g)
    mm = metric.compute_metrics(metric.results)
    ov = evaluator.evaluate()["sem_seg"]
    return {
        "mmseg": {k: float(mm[k]) for k in ("mIoU", "mAcc", "aAcc")},
        "ovdense": {k: float(ov[k]) for k in ("mIoU", "mAcc", "pAcc", "fwIoU")},
    }
