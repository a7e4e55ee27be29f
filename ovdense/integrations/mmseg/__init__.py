"""ovdense inside mmsegmentation 1.x: ``type='OVDenseSegmentor'`` and its companions.

Importing this package registers, in mmseg's registries:

- ``MODELS``: :class:`OVDenseSegmentor` (any ovdense preset as an mmseg segmentor) and
  :class:`OVDenseBackbone` (a dense CLIP backbone with a last-block strategy, giving
  ``[B, D, h, w]`` features to an mmseg decode head);
- ``HOOKS``: :class:`OVDenseVocabularyHook` (the vocabulary from the test dataset's
  ``metainfo['classes']``);
- ``METRICS``: :class:`OVDenseSemSegMetric` (ovdense's :class:`~ovdense.evaluation.SemSegEvaluator`
  as an mmengine metric, next to mmseg's ``IoUMetric`` on the same predictions);
- ``DATASETS``: :class:`OVDensePascalVOC20Dataset` and :class:`OVDenseCOCOObjectDataset`, the two
  OVSS benchmarks mmseg has no dataset class for.

mmseg configs put ``custom_imports = dict(imports=["ovdense.integrations.mmseg"])`` in them; the
shipped ones (one per method and benchmark) are under :data:`CONFIGS_DIR`. The rest of ovdense
never imports this package.
"""

from __future__ import annotations

try:
    import mmseg  # noqa: F401
    import mmseg.models  # noqa: F401 - registers mmseg's own modules (SegDataPreProcessor, ...)
except ImportError as err:  # pragma: no cover - exercised only without mmseg
    raise ImportError(
        "ovdense.integrations.mmseg needs mmsegmentation 1.x with mmcv 2.x and mmengine: see "
        "README.md#mmsegmentation (for current torch, install the mmcv wheel built from source)."
        f" ({err})"
    ) from err

from .backbone import OVDenseBackbone
from .bridge import OVDenseSemSegMetric, evaluate_both
from .datasets import OVDenseCOCOObjectDataset, OVDensePascalVOC20Dataset
from .runner import CONFIGS_DIR, config_path, run_test
from .segmentor import OVDenseSegmentor, OVDenseVocabularyHook

__all__ = [
    "CONFIGS_DIR",
    "OVDenseBackbone",
    "OVDenseCOCOObjectDataset",
    "OVDensePascalVOC20Dataset",
    "OVDenseSegmentor",
    "OVDenseSemSegMetric",
    "OVDenseVocabularyHook",
    "config_path",
    "evaluate_both",
    "run_test",
]
