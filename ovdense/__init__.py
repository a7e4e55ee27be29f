"""ovdense: dense open-vocabulary perception with CLIP.

Quick start::

    import ovdense
    seg = ovdense.build_segmentor("naclip")          # ViT-B/16 OpenAI weights
    pred = ovdense.Predictor(seg)
    pred.set_image("photo.jpg")
    out = pred.predict(["cat", "dog", "sofa, couch"])  # out.labels [H, W], out.probs [C, H, W]
"""

# ruff: noqa: E402 - the version check must run before the imports below
# Before anything imports open_clip / timm: a too-old version fails here in one sentence.
from .utils.versions import check_dependency_versions

check_dependency_versions()

from .model_zoo import build_segmentor, get_config, list_presets
from .modeling.backbones import DenseCLIPBackbone, build_clip_backbone, list_strategies
from .modeling.clip import WeightsUnavailableError, load_clip
from .modeling.segmentors import Segmentor, TrainingFreeSegmentor
from .modeling.text import TextEncoder, Vocabulary
from .predictor import Prediction, Predictor
from .version import __version__

__all__ = [
    "DenseCLIPBackbone",
    "Prediction",
    "Predictor",
    "Segmentor",
    "TextEncoder",
    "TrainingFreeSegmentor",
    "Vocabulary",
    "WeightsUnavailableError",
    "__version__",
    "build_clip_backbone",
    "build_segmentor",
    "get_config",
    "list_presets",
    "list_strategies",
    "load_clip",
]
