"""Worker of the distributed SemSegEvaluator test, in its own light module.

``torch.multiprocessing.spawn`` re-imports the module defining the worker in every child. This
one imports ``ovdense.evaluation`` without running ``ovdense/__init__.py`` (which loads the whole
model stack), so a child starts in the time it takes to import torch.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from datetime import timedelta


def _import_evaluation():
    if "ovdense" not in sys.modules:
        # A bare package object: its submodules import normally, its __init__ is not run.
        spec = importlib.util.find_spec("ovdense")
        sys.modules["ovdense"] = importlib.util.module_from_spec(spec)
    import ovdense.evaluation

    return ovdense.evaluation


def run(rank: int, world_size: int, init_file: str, out_file: str, pairs, num_classes: int):
    """Process this rank's contiguous share of ``pairs`` and evaluate; rank 0 pickles
    ``{"results": distributed evaluate(), "local": evaluate() of its first pair with
    distributed=False, "cm": its own confusion matrix}`` to ``out_file``."""
    import torch.distributed as dist

    evaluation = _import_evaluation()
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=30),
    )
    try:
        evaluator = evaluation.SemSegEvaluator(num_classes)
        share = len(pairs) // world_size
        mine = pairs[rank * share : (rank + 1) * share]
        for pred, gt in mine:
            evaluator.process(pred, gt)
        results = evaluator.evaluate()
        local = evaluation.SemSegEvaluator(num_classes, distributed=False)
        local.process(*mine[0])
        results_local = local.evaluate()
        if rank == 0:
            with open(out_file, "wb") as f:
                pickle.dump(
                    {"results": results, "local": results_local, "cm": evaluator.confusion_matrix},
                    f,
                )
    finally:
        dist.destroy_process_group()
