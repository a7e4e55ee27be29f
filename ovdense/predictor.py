"""segment-anything-style predictor: set an image once, ask about many vocabularies."""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from torch import Tensor

from .modeling.segmentors import ImageFeatures, Segmentor
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
        segmentor: a :class:`~ovdense.modeling.segmentors.Segmentor` (any object with
            ``encode_image``, ``encode_text`` and ``decode`` of the same contract).
    """

    #: Memory budget of one name chunk of the labels-only decode (``return_probs=False``):
    #: each name of a chunk costs ~8 bytes per input pixel (its upsampled logits and their
    #: exponentials), so :meth:`predict` passes ``name_chunk = budget // (8 * H * W)``, kept
    #: within ``[8, 32]`` (fewer than 8 names per chunk costs more time than it saves memory).
    labels_only_chunk_bytes: int = 512 * 2**20
    _MIN_NAME_CHUNK = 8
    _MAX_NAME_CHUNK = 32

    def __init__(self, segmentor: Segmentor) -> None:
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
        self._features = self._image = None  # free the previous image's memory first
        # uint8 -> float32 makes the one full-size copy (torch cannot wrap read-only arrays).
        source = torch.from_numpy(rgb) if rgb.flags.writeable else torch.tensor(rgb)
        tensor = source.permute(2, 0, 1).unsqueeze(0).to(torch.float32).div_(255.0)
        del source
        self._features = self.segmentor.encode_image(tensor)
        self._image = rgb

    def name_chunk_for(self, height: int, width: int) -> int:
        """Names per chunk of the labels-only decode of an ``height x width`` image."""
        fit = self.labels_only_chunk_bytes // max(1, 8 * height * width)
        return int(min(self._MAX_NAME_CHUNK, max(self._MIN_NAME_CHUNK, fit)))

    def _decode_takes_name_chunk(self) -> bool:
        try:
            params = inspect.signature(self.segmentor.decode).parameters
        except (TypeError, ValueError):
            return False
        return "name_chunk" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        )

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
                with large vocabularies on large images (``probs`` is then ``None``): the
                labels are then computed a chunk of names at a time (see
                :attr:`labels_only_chunk_bytes`), never as a ``[C, H, W]`` array.
        """
        if self._features is None:
            raise RuntimeError("An image must be set with .set_image(...) before prediction.")
        vocab = Vocabulary.coerce(vocabulary)
        kwargs = {}
        if not return_probs and self._decode_takes_name_chunk():
            kwargs["name_chunk"] = self.name_chunk_for(*self.image.shape[:2])
        out = self.segmentor.decode(
            self._features, self.segmentor.encode_text(vocab), prob_thd, return_probs, **kwargs
        )
        return Prediction(
            labels=out.labels[0].cpu().numpy(),
            probs=out.probs[0].cpu() if out.probs is not None else None,
            classes=vocab.display_names,
            vocabulary=vocab,
        )
