"""ovdense's :class:`~ovdense.evaluation.COCODetectionEvaluator` as a detectron2
``DatasetEvaluator``.

:class:`OVDenseDetectionEvaluator` collects the meta-architecture's ``instances`` (boxes in the
original image's pixels, ``pred_classes`` indexing the dataset's ``thing_classes``) and scores
them with ovdense's evaluator (pycocotools ``COCOeval``, bbox) against the dataset's
``json_file``: COCO's 12 numbers in percent (``AP``, ``AP50``, ..., ``ARl``, the same as
detectron2's ``COCOEvaluator`` with ``use_fast_impl=False`` on the same detections), plus F-ViT's
``AP50_novel`` / ``AP50_base`` / ``AP50_all`` over the metadata's ``novel_classes`` /
``base_classes``, and one ``AP50-<class>`` per class (detectron2 leaves ``-`` keys out of its
CSV summary line).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ...data.coco import load_coco_instances
from ...evaluation.detection import COCODetectionEvaluator

__all__ = ["OVDenseDetectionEvaluator"]


class OVDenseDetectionEvaluator(DatasetEvaluator):
    """Box AP of a detectron2 model on a registered dataset, by ovdense's evaluator.

    Args:
        dataset_name: a ``DatasetCatalog`` name whose metadata has ``thing_classes`` and
            ``json_file`` (the ovdense registrations set it when the set is loaded; it is
            loaded here if missing).
        distributed: gather the predictions of every process (evaluated on the main one).
        groups: ``{group: [class names]}`` for ``AP50_<group>``; default the metadata's
            ``base_classes`` / ``novel_classes`` (the non-empty ones).
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        meta = MetadataCatalog.get(dataset_name)
        if not hasattr(meta, "json_file"):
            DatasetCatalog.get(dataset_name)  # resolves the files (ovdense registrations)
        if not hasattr(meta, "json_file") or not hasattr(meta, "thing_classes"):
            raise ValueError(
                f"Dataset {dataset_name!r} has no json_file / thing_classes metadata: register "
                "it with ovdense.integrations.detectron2.register_ov_coco_instances."
            )
        self.dataset_name = dataset_name
        self.classes = list(meta.thing_classes)
        if groups is None:
            found = {
                "novel": list(getattr(meta, "novel_classes", [])),
                "base": list(getattr(meta, "base_classes", [])),
            }
            groups = {k: v for k, v in found.items() if v}
        self.groups = {str(k): list(v) for k, v in groups.items()}
        self.coco_gt = load_coco_instances(meta.json_file)
        self.distributed = bool(distributed)
        self.reset()

    def reset(self) -> None:
        self._predictions: list[tuple[int, dict[str, torch.Tensor]]] = []

    def process(
        self, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]
    ) -> None:
        """``inputs``: the model's inputs (``image_id``); ``outputs``: its outputs
        (``instances`` with ``pred_boxes`` XYXY, ``scores``, ``pred_classes``)."""
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            self._predictions.append(
                (
                    int(inp["image_id"]),
                    {
                        "boxes": inst.pred_boxes.tensor.float(),
                        "scores": inst.scores.float(),
                        "labels": inst.pred_classes.long(),
                    },
                )
            )

    def evaluate(self) -> OrderedDict[str, dict[str, float]]:
        """``{"bbox": {AP, AP50, ..., AP50_<group>, AP50_all, AP50-<class>...}}`` in percent
        (empty on processes other than the main one when distributed)."""
        predictions = self._predictions
        if self.distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return OrderedDict()
        evaluator = COCODetectionEvaluator(self.coco_gt, self.classes, self.groups)
        if predictions:
            ids, outs = zip(*predictions)
            evaluator.process(list(ids), list(outs))
        res = evaluator.evaluate()["bbox"]
        flat = {k: float(v) for k, v in res.items() if k != "per_class_AP50"}
        flat.update({f"AP50-{k}": float(v) for k, v in res["per_class_AP50"].items()})
        return OrderedDict(bbox=flat)
