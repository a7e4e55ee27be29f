"""SAM 3's evaluation under ovdense's rules (docs/methods.md#sam-3): the ``seg/sam3`` preset
(``model.checkpoint=/path/sam3.pt``) on the eight benchmarks, class names split into synonyms
as in the unified protocol, whole images at SAM 3's 1008 x 1008.

``ovdense eval-all --config sam3 model.checkpoint=/path/sam3.pt`` runs the suite below. No
per-benchmark numbers are published for SAM 3 used this way; the one figure known here is a
mean of 57.5 mIoU over these eight benchmarks from a third-party re-run (docs/results.md), whose
settings are not known.
"""

from ..seg.sam3 import model  # noqa: F401 - the config this file extends
from .unified import suite  # noqa: F401 - the benchmarks eval-all runs

method = "sam3"
class_rule = "unified"
benchmarks: dict = {}
