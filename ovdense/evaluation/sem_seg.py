"""Semantic-segmentation evaluation: one confusion matrix over a split, then IoU-style metrics.

The metrics follow mmseg / detectron2:

* ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; NaN for a class absent from both the ground truth and
  the predictions (its union is 0), and NaN classes are left out of ``mIoU``;
* ``Acc_c = TP_c / (TP_c + FN_c)``; NaN for a class without ground-truth pixels, left out of
  ``mAcc``;
* ``fwIoU = sum_c freq_c * IoU_c`` over the classes with ground truth, with
  ``freq_c = GT pixels of c / valid GT pixels``;
* ``pAcc = sum_c TP_c / valid GT pixels``.

All metrics are in percent. Ground-truth pixels equal to the ignore label are skipped.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import torch

from .base import DatasetEvaluator, check_class_groups

__all__ = ["LabelMaps", "SemSegEvaluator", "compute_sem_seg_metrics"]

#: A label map ``[H, W]``, a batch ``[B, H, W]``, or a list / tuple of those; numpy arrays or
#: torch tensors of an integer (or bool) dtype, on any device.
LabelMaps: TypeAlias = np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor]

# Above this many confusion-matrix cells per valid pixel (and above _SPARSE_MIN_CELLS cells), a
# dense bincount of length K*K costs more than sorting the pixels: use np.unique instead.
_SPARSE_CELLS_PER_PIXEL = 4
_SPARSE_MIN_CELLS = 1 << 16


def _to_numpy(x: object, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    elif not isinstance(x, np.ndarray):
        raise TypeError(
            f"{what} must be numpy arrays or torch tensors (or lists of them); "
            f"got {type(x).__name__}"
        )
    if not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise TypeError(
            f"{what} must hold integer class indices; got dtype {x.dtype}. Pass the argmax over "
            "classes (e.g. logits.argmax(dim=0)), not scores or probabilities"
        )
    return x


def _as_label_maps(x: LabelMaps, what: str) -> list[np.ndarray]:
    """Normalise ``x`` to a list of ``[H, W]`` numpy arrays (views where possible)."""
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    maps: list[np.ndarray] = []
    for item in items:
        arr = _to_numpy(item, what)
        if arr.ndim == 2:
            maps.append(arr)
        elif arr.ndim == 3:
            maps.extend(arr)
        else:
            raise ValueError(
                f"{what} must be label maps of shape [H, W] or batches [B, H, W]; "
                f"got shape {list(arr.shape)}"
            )
    return maps


def _describe_values(values: np.ndarray, limit: int = 10) -> str:
    unique = np.unique(values)
    shown = ", ".join(str(v) for v in unique[:limit].tolist())
    more = f", ... ({unique.size} distinct values)" if unique.size > limit else ""
    return f"[{shown}{more}] ({values.size} pixels)"


def _check_class_names(names: Sequence[str] | None, num_classes: int) -> list[str] | None:
    """``names`` as a list of ``num_classes`` distinct strings (None stays None)."""
    if names is None:
        return None
    out = [str(n) for n in names]
    if len(out) != num_classes:
        raise ValueError(
            f"got {len(out)} class names for {num_classes} classes; pass one name per class"
        )
    if len(set(out)) != num_classes:
        dupes = sorted({n for n in out if out.count(n) > 1})
        raise ValueError(f"class names must be distinct; repeated: {dupes}")
    return out


def compute_sem_seg_metrics(
    confusion: np.ndarray,
    class_names: Sequence[str] | None = None,
    class_groups: Mapping[str, Sequence[int] | np.ndarray] | None = None,
) -> dict[str, Any]:
    """Semantic-segmentation metrics of a confusion matrix.

    Args:
        confusion: ``[K, K]`` non-negative integer counts; rows are ground-truth classes,
            columns predicted classes (ignored pixels must not be counted).
        class_names: ``K`` distinct names, the keys of the per-class dicts; default
            ``"class_0", "class_1", ...``.
        class_groups: Named groups of class indices (e.g. ``{"seen": [...], "held_out":
            [...]}``); each adds ``mIoU_<group>`` and ``mAcc_<group>``, the means over the
            group's classes (same NaN rules as ``mIoU`` / ``mAcc``).

    Returns:
        A dict with, in percent (``float``): ``mIoU``, ``fwIoU``, ``mAcc``, ``pAcc``, ``IoU`` and
        ``Acc`` (dicts class name -> value, NaN where undefined, see the module docstring); and
        ``num_pixels`` (``int``, valid ground-truth pixels) and ``num_classes_present`` (``int``,
        classes with at least one ground-truth pixel). Means over no defined value are NaN.

    Raises:
        ValueError: ``confusion`` is not a square non-negative integer matrix, or
            ``class_names`` does not hold ``K`` distinct names.
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square [K, K] matrix; got shape {confusion.shape}")
    if not np.issubdtype(confusion.dtype, np.integer):
        raise ValueError(f"confusion must hold integer counts; got dtype {confusion.dtype}")
    if confusion.size and confusion.min() < 0:
        raise ValueError("confusion holds negative counts; it must count pixels")
    num_classes = confusion.shape[0]
    names = _check_class_names(class_names, num_classes) or [
        f"class_{i}" for i in range(num_classes)
    ]

    confusion = confusion.astype(np.int64, copy=False)
    tp = np.diagonal(confusion).astype(np.float64)
    gt = confusion.sum(axis=1).astype(np.float64)
    pred = confusion.sum(axis=0).astype(np.float64)
    union = gt + pred - tp
    total = float(gt.sum())

    has_union = union > 0
    has_gt = gt > 0
    iou = np.full(num_classes, np.nan)
    iou[has_union] = 100.0 * tp[has_union] / union[has_union]
    acc = np.full(num_classes, np.nan)
    acc[has_gt] = 100.0 * tp[has_gt] / gt[has_gt]

    def mean(values: np.ndarray, mask: np.ndarray) -> float:
        return float(values[mask].mean()) if mask.any() else float("nan")

    if total > 0:
        fw_iou = float((gt[has_gt] / total * iou[has_gt]).sum())
        p_acc = float(100.0 * tp.sum() / total)
    else:
        fw_iou = p_acc = float("nan")

    result: dict[str, Any] = {
        "mIoU": mean(iou, has_union),
        "fwIoU": fw_iou,
        "mAcc": mean(acc, has_gt),
        "pAcc": p_acc,
    }
    for group, members in check_class_groups(class_groups, num_classes).items():
        sel = np.zeros(num_classes, dtype=bool)
        sel[members] = True
        result[f"mIoU_{group}"] = mean(iou, has_union & sel)
        result[f"mAcc_{group}"] = mean(acc, has_gt & sel)
    result.update(
        {
            "IoU": dict(zip(names, iou.tolist())),
            "Acc": dict(zip(names, acc.tolist())),
            "num_pixels": int(confusion.sum()),
            "num_classes_present": int(has_gt.sum()),
        }
    )
    return result


class SemSegEvaluator(DatasetEvaluator):
    """Accumulates one ``[K, K]`` int64 confusion matrix over a split (rows = ground truth,
    columns = prediction) and reports mIoU, fwIoU, mAcc, pAcc and per-class IoU / Acc.

    Args:
        num_classes: ``K``, the number of classes; valid labels are ``0 .. K-1``.
        ignore_label: Ground-truth value of the pixels to skip (e.g. 255, or 65535 for ``uint16``
            label maps, or -1). It must lie outside ``[0, K)``.
        class_names: ``K`` distinct names used as keys of the per-class results; default
            ``"class_0", ...``.
        class_groups: Named groups of class indices reported as ``mIoU_<group>`` /
            ``mAcc_<group>`` (see :func:`compute_sem_seg_metrics`).
        distributed: When ``True`` and a ``torch.distributed`` process group with more than one
            rank is initialised, :meth:`evaluate` sums the ranks' confusion matrices first (a
            collective call: every rank must call it, and every rank gets the full results).

    Example::

        evaluator = SemSegEvaluator(num_classes=21, class_names=names)
        for image, gt in split:
            evaluator.process(model(image), gt)   # [H, W] label maps
        print(evaluator.evaluate()["sem_seg"]["mIoU"])
    """

    def __init__(
        self,
        num_classes: int,
        ignore_label: int = 255,
        class_names: Sequence[str] | None = None,
        distributed: bool = True,
        class_groups: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        num_classes = int(num_classes)
        ignore_label = int(ignore_label)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        if 0 <= ignore_label < num_classes:
            raise ValueError(
                f"ignore_label {ignore_label} is a valid class index (num_classes={num_classes}); "
                "use a value outside [0, num_classes), e.g. 255, 65535 or -1, and remap the "
                "label maps accordingly"
            )
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.class_names: list[str] | None = _check_class_names(class_names, num_classes)
        self.distributed = distributed
        self.class_groups = check_class_groups(class_groups, num_classes)
        self._confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def reset(self) -> None:
        """Zero the confusion matrix."""
        self._confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    @property
    def confusion_matrix(self) -> np.ndarray:
        """A copy of the ``[K, K]`` int64 confusion matrix of this process (rows = ground truth,
        columns = prediction), not summed across ranks."""
        return self._confusion.copy()

    def process(self, predictions: LabelMaps, ground_truths: LabelMaps) -> None:
        """Add label maps to the confusion matrix.

        Args:
            predictions: Predicted class indices: one map ``[H, W]``, a batch ``[B, H, W]`` or a
                list of maps / batches; numpy arrays or torch tensors of any integer dtype, on any
                device. Every pixel must be in ``[0, K)``.
            ground_truths: The ground truth, in the same layout (the same number of maps, each
                of the same ``[H, W]`` as its prediction). Pixels equal to ``ignore_label`` are
                skipped; the others must be in ``[0, K)``.

        Raises:
            TypeError: An input is not an integer array / tensor.
            ValueError: The shapes or the numbers of maps differ, or a value is out of range;
                the message names the offending map index, shapes and values. Nothing is
                accumulated from a call that raises.
        """
        preds = _as_label_maps(predictions, "predictions")
        gts = _as_label_maps(ground_truths, "ground truths")
        if len(preds) != len(gts):
            raise ValueError(
                f"got {len(preds)} predicted label maps but {len(gts)} ground-truth maps; "
                "pass one prediction per ground truth"
            )
        k = self.num_classes
        update = np.zeros(k * k, dtype=np.int64)
        for i, (pred, gt) in enumerate(zip(preds, gts)):
            where = f"label map {i}" if len(preds) > 1 else "label map"
            if pred.shape != gt.shape:
                raise ValueError(
                    f"{where}: prediction shape {list(pred.shape)} != ground-truth shape "
                    f"{list(gt.shape)}; resize the prediction to the ground truth's size "
                    "(nearest-neighbour on labels, or bilinear on logits before the argmax)"
                )
            if pred.size and (pred.min() < 0 or pred.max() >= k):
                bad = pred[(pred < 0) | (pred >= k)]
                raise ValueError(
                    f"{where}: predicted labels outside [0, {k}): {_describe_values(bad)}"
                )
            valid = gt != self.ignore_label
            gt_valid = gt[valid]
            if gt_valid.size and (gt_valid.min() < 0 or gt_valid.max() >= k):
                bad = gt_valid[(gt_valid < 0) | (gt_valid >= k)]
                raise ValueError(
                    f"{where}: ground-truth labels that are neither in [0, {k}) nor the ignore "
                    f"label {self.ignore_label}: {_describe_values(bad)}; check num_classes, "
                    "ignore_label and the dataset's label mapping"
                )
            if not gt_valid.size:
                continue
            # Values are range-checked, so the int64 cast and K * gt + pred cannot overflow.
            index = gt_valid.astype(np.int64) * k + pred[valid].astype(np.int64)
            if k * k > max(_SPARSE_MIN_CELLS, _SPARSE_CELLS_PER_PIXEL * index.size):
                cells, counts = np.unique(index, return_counts=True)
                update[cells] += counts
            else:
                update += np.bincount(index, minlength=k * k)
        self._confusion += update.reshape(k, k)

    def _gathered_confusion(self) -> np.ndarray:
        if not (self.distributed and torch.distributed.is_available()):
            return self._confusion
        dist = torch.distributed
        if not dist.is_initialized() or dist.get_world_size() <= 1:
            return self._confusion
        backend = str(dist.get_backend()).lower()
        if "nccl" in backend:
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            device = torch.device("cpu")
        tensor = torch.from_numpy(self._confusion.copy()).to(device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().numpy()

    def evaluate(self) -> dict[str, dict[str, Any]]:
        """Metrics of everything processed since the last :meth:`reset`.

        In distributed mode (see the class docstring) this is a collective call that sums the
        confusion matrices of all ranks; every rank returns the same results.

        Returns:
            ``{"sem_seg": metrics}`` with ``metrics`` as returned by
            :func:`compute_sem_seg_metrics` (``mIoU``, ``fwIoU``, ``mAcc``, ``pAcc``, ``IoU``,
            ``Acc``, ``num_pixels``, ``num_classes_present``; percentages, NaN where undefined).
        """
        confusion = self._gathered_confusion()
        if confusion.sum() == 0:
            warnings.warn(
                "SemSegEvaluator.evaluate(): no valid ground-truth pixel was processed, all "
                "metrics are NaN; call process() with label maps first (and check ignore_label)",
                RuntimeWarning,
                stacklevel=2,
            )
        metrics = compute_sem_seg_metrics(confusion, self.class_names, self.class_groups)
        return {"sem_seg": metrics}
