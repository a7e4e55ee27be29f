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

from .modeling.segmentors import ImageFeatures, SegmentationOutput, Segmentor
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

    #: Sizes the name chunks of the labels-only decode (``return_probs=False``):
    #: :meth:`predict` passes ``name_chunk = budget // (8 * H * W)``, kept within ``[8, 32]``.
    #: :meth:`Segmentor.decode` works in strips of rows (its ``tile_pixels``), so its memory no
    #: longer grows with the image times the chunk: the chunk only trades loop overhead.
    labels_only_chunk_bytes: int = 512 * 2**20
    _MIN_NAME_CHUNK = 8
    _MAX_NAME_CHUNK = 32

    def __init__(self, segmentor: Segmentor) -> None:
        self.segmentor = segmentor
        self._features: ImageFeatures | None = None
        self._image: np.ndarray | None = None

    @property
    def is_image_set(self) -> bool:
        return self._image is not None

    def _needs_text(self) -> bool:
        """Whether the segmentor's image features depend on the vocabulary (ResCLIP): they are
        then computed in :meth:`predict`, with the vocabulary, not cached by :meth:`set_image`."""
        return bool(getattr(self.segmentor, "_strategy_needs_text", lambda: False)())

    @property
    def image(self) -> np.ndarray:
        """The current image as ``[H, W, 3]`` uint8 RGB."""
        if self._image is None:
            raise RuntimeError("An image must be set with .set_image(...) first.")
        return self._image

    def set_image(self, image: ImageLike) -> None:
        """Compute and cache the dense features of ``image`` (for a strategy whose features
        depend on the vocabulary, ResCLIP, they are computed by :meth:`predict`).

        Args:
            image: a path, a PIL image, an ``[H, W(, C)]`` numpy array or tensor (grayscale, RGB,
                RGBA, 8/16-bit or float are converted to 8-bit RGB).
        """
        rgb = load_image(image)
        self._features = self._image = None  # free the previous image's memory first
        if not self._needs_text():
            self._features = self.segmentor.encode_image(_to_unit_tensor(rgb))
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
        if self._image is None:
            raise RuntimeError("An image must be set with .set_image(...) before prediction.")
        vocab = Vocabulary.coerce(vocabulary)
        kwargs = {}
        if not return_probs and self._decode_takes_name_chunk():
            kwargs["name_chunk"] = self.name_chunk_for(*self.image.shape[:2])
        text = self.segmentor.encode_text(vocab)
        feats = self._features
        if feats is None:  # features that depend on the vocabulary
            feats = self.segmentor.encode_image(_to_unit_tensor(self._image), text)
        out = self.segmentor.decode(feats, text, prob_thd, return_probs, **kwargs)
        return _prediction(out, vocab)

    def predict_batch(
        self,
        images: Sequence[ImageLike],
        vocabulary: Vocabulary | Sequence[str | Sequence[str]],
        prob_thd: float | None = None,
        return_probs: bool = True,
    ) -> list[Prediction]:
        """Segment several images (sizes may differ) with one vocabulary: one
        :class:`Prediction` per image, in order (``labels [H, W]`` and ``probs [C, H, W]`` at
        that image's size).

        The windows of all images share backbone calls (``window_batch_size`` crops per call,
        see :meth:`Segmentor.encode_images`), the text is encoded once and each image is
        decoded on its own, so the results equal :meth:`set_image` + :meth:`predict` image by
        image. The image set with :meth:`set_image` (if any) is left as it is.

        Args:
            images: a non-empty sequence of what :meth:`set_image` takes.
            vocabulary, prob_thd, return_probs: as for :meth:`predict`.

        Raises:
            ValueError: an empty sequence; a bad image (the error names its index, e.g.
                ``images[2]``; a missing file raises ``FileNotFoundError``).
        """
        if isinstance(images, (str, os.PathLike, np.ndarray, PIL.Image.Image, Tensor)):
            raise TypeError(
                "predict_batch takes a sequence of images (a list); for one image use "
                "set_image + predict."
            )
        if len(images) == 0:
            raise ValueError("images is empty: give at least one image.")
        tensors = []
        for i, image in enumerate(images):
            try:
                rgb = load_image(image)
            except (OSError, ValueError, TypeError) as e:
                raise _with_index(e, i) from e
            tensors.append(_to_unit_tensor(rgb)[0])
        vocab = Vocabulary.coerce(vocabulary)
        text = self.segmentor.encode_text(vocab)
        extra = (text,) if self._needs_text() else ()
        encode_images = getattr(self.segmentor, "encode_images", None)
        if encode_images is not None:
            feats = encode_images(tensors, *extra)
        else:  # a segmentor-like object without the batch API: one image at a time
            feats = [self.segmentor.encode_image(t[None], *extra) for t in tensors]
        out = []
        for t, f in zip(tensors, feats, strict=True):
            kwargs = {}
            if not return_probs and self._decode_takes_name_chunk():
                kwargs["name_chunk"] = self.name_chunk_for(*t.shape[-2:])
            decoded = self.segmentor.decode(f, text, prob_thd, return_probs, **kwargs)
            out.append(_prediction(decoded, vocab))
        return out


def _to_unit_tensor(rgb: np.ndarray) -> Tensor:
    """``[H, W, 3]`` uint8 -> ``[1, 3, H, W]`` float32 in ``[0, 1]``."""
    # uint8 -> float32 makes the one full-size copy (torch cannot wrap read-only arrays).
    source = torch.from_numpy(rgb) if rgb.flags.writeable else torch.tensor(rgb)
    return source.permute(2, 0, 1).unsqueeze(0).to(torch.float32).div_(255.0)


def _with_index(error: Exception, index: int) -> Exception:
    """``error`` again, its message prefixed with ``images[index]: ``."""
    try:
        return type(error)(f"images[{index}]: {error}")
    except Exception:  # an exception type with another constructor
        return ValueError(f"images[{index}]: {error}")


def _prediction(out: SegmentationOutput, vocab: Vocabulary) -> Prediction:
    return Prediction(
        labels=out.labels[0].cpu().numpy(),
        probs=out.probs[0].cpu() if out.probs is not None else None,
        classes=vocab.display_names,
        vocabulary=vocab,
    )
