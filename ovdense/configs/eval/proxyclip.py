"""ProxyCLIP's evaluation settings (Lan et al., ECCV 2024; docs/protocols.md#per-method-settings):
short side 336, 336/112 windows, logit scale 40, class names split on "; " only (a line such as
"building, edifice" stays one name), background threshold 0.2 on VOC21."""

from ..seg.proxyclip_vitb16 import model  # noqa: F401 - the config this file extends
from .unified import suite  # noqa: F401 - the benchmarks eval-all runs

method = "proxyclip"
class_rule = "proxyclip"
benchmarks = {
    "voc21": {"prob_thd": 0.2},
}
