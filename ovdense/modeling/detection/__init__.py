"""Open-vocabulary detection: text-embedding box classifiers (a library of heads that any
torchvision detector can mount) and the F-ViT detector on a frozen dense CLIP ViT."""

from .classifier import (
    TextBoxPredictor,
    TextEmbeddingClassifier,
    class_embedding_matrix,
    clip_region_probs,
    geometric_ensemble,
)
from .fvit import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FViTBoxHead,
    FViTDetector,
    FViTMaskHead,
    FViTTransform,
    LevelRoIAlign,
    MMDetAnchorGenerator,
    MMDetBoxCoder,
    OVRoIHeads,
    build_fvit,
    paste_masks_mmdet,
)
from .pyramid import SimpleFeaturePyramid

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FViTBoxHead",
    "FViTDetector",
    "FViTMaskHead",
    "FViTTransform",
    "LevelRoIAlign",
    "MMDetAnchorGenerator",
    "MMDetBoxCoder",
    "OVRoIHeads",
    "SimpleFeaturePyramid",
    "TextBoxPredictor",
    "TextEmbeddingClassifier",
    "build_fvit",
    "class_embedding_matrix",
    "clip_region_probs",
    "geometric_ensemble",
    "paste_masks_mmdet",
]
