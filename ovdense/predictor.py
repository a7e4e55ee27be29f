"""segment-anything-style predictor: set an image once, ask about many vocabularies."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from torch import Tensor

from .modeling.segmentors import ImageFeatures, TrainingFreeSegmentor
from .modeling.text import Vocabulary
from .utils.image import load_image

__all__ = ["Prediction", "Predictor"]

ImageLike = str | os.PathLike | np.ndarray | PIL.Image.Image | Tensor


@dataclass
class Prediction:
    """One image's segmentation.

    Attributes:
        labels: ``[H, W]`` int64 numpy array of class indices.
        probs: ``[C, H, W]`` float tensor of class probabilities (``None`` if not requested).
        classes: ``C`` display names (``classes[labels[y, x]]`` names a pixel).
        vocabulary: the full :class:`Vocabulary` (with synonyms).
    """

    labels: np.ndarray
    probs: Tensor | None
    classes: list[str]
    vocabulary: Vocabulary

    def present_classes(self) -> list[int]:
        """Indices of classes that own at least one pixel, by decreasing area."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.classes))
        return [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]


class Predictor:
    """Caches an image's dense features so each new vocabulary costs only the text side.

    Example::

        pred = Predictor(build_segmentor("naclip"))
        pred.set_image("kitchen.jpg")
        out = pred.predict(["cup", "plate", "table"])
        out2 = pred.predict(["background", "cup"], prob_thd=0.3)   # image not re-encoded

    Args:
        segmentor: a :class:`TrainingFreeSegmentor` (any object with ``encode_image``,
            ``encode_text`` and ``decode`` of the same contract).
    """

    def __init__(self, segmentor: TrainingFreeSegmentor) -> None:
        self.segmentor = segmentor
        self._features: ImageFeatures | None = None
        self._image: np.ndarray | None = None

    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    @property
    def image(self) -> np.ndarray:
        """The current image as ``[H, W, 3]`` uint8 RGB."""
        if self._image is None:
            raise RuntimeError("An image must be set with .set_image(...) first.")
        return self._image

    def set_image(self, image: ImageLike) -> None:
        """Compute and cache the dense features of ``image``.

        Args:
            image: a path, a PIL image, an ``[H, W(, C)]`` numpy array or tensor (grayscale, RGB,
                RGBA, 8/16-bit or float are converted to 8-bit RGB).
        """
        rgb = load_image(image)
        tensor = (
            torch.from_numpy(np.array(rgb, copy=True))
            .permute(2, 0, 1)
            .unsqueeze(0)
            .float()
            .div_(255.0)
        )
        self._features = self.segmentor.encode_image(tensor)
        self._image = rgb

    def reset_image(self) -> None:
        self._features = None
        self._image = None

    def predict(
        self,
        vocabulary: Vocabulary | Sequence[str | Sequence[str]],
        prob_thd: float | None = None,
        return_probs: bool = True,
    ) -> Prediction:
        """Segment the current image with a vocabulary.

        Args:
            vocabulary: a :class:`Vocabulary` or a list like ``["cat", "sofa, couch"]``.
            prob_thd: override the segmentor's background threshold for this call.
            return_probs: also return the ``[C, H, W]`` probabilities; ``False`` saves memory
                with large vocabularies on large images (``probs`` is then ``None``).
        """
        if self._features is None:
            raise RuntimeError("An image must be set with .set_image(...) before prediction.")
        vocab = Vocabulary.coerce(vocabulary)
        out = self.segmentor.decode(
            self._features, self.segmentor.encode_text(vocab), prob_thd, return_probs
        )
        return Prediction(
            labels=out.labels[0].cpu().numpy(),
            probs=out.probs[0].cpu() if out.probs is not None else None,
            classes=vocab.display_names,
            vocabulary=vocab,
        )
