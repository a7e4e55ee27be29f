"""ONNX export (issue #16 item 3): a segmentor with its vocabulary baked in, or a dense backbone
alone with the vocabulary as an input.

* :class:`FixedVocabularySegmentor`: ``images [B, 3, H, W]`` RGB in ``[0, 1]`` -> ``(logits
  [B, N, H, W], labels [B, H, W])`` — the scaled head scores per name at the input size and the
  labels of :meth:`Segmentor.decode` (softmax over names, max over synonyms, ``prob_thd``,
  argmax). The segmentor's short-side resize, sliding windows and window stitching are in the
  graph, unrolled for the image size (and batch) given at export: the model takes that size
  (any size when there is no resize and no window, below).
* :class:`TextConditionedBackbone`: ``(images [B, 3, H, W]`` normalised with the backbone's mean
  and std, ``text_embeds [N, D]``) -> head scores ``[B, N, h, w]`` at feature resolution: the
  dense backbone (any strategy that traces) and the head; the vocabulary is an input (encode it
  with ovdense's text encoder); the batch, the number of names and (for most strategies,
  below) the image size are dynamic.

Image size: dynamic where the graph allows it. The backbone graph takes any height and width
(at least two patches; the patch grid, the position-embedding interpolation and the strategies'
per-grid terms are traced symbolically) for the strategies in :data:`DYNAMIC_SIZE_STRATEGIES`.
The fixed-vocabulary graph is dynamic only for a segmentor that neither resizes nor slides
windows (``short_side=None``, ``window=None``, :func:`dynamic_size_supported`): the resize
and the window boxes are computed from the image size in Python, so with either of them the
graph is unrolled for the size given at export, and takes that size only.

Not expressed (refused with a message): PAMR, a ``post_refiner``, ``area_thd``, the
``saliency_rule`` and the ``"paper"`` decode order (they run in Python after the graph: use
the ONNX logits and do them outside, or the eager model).

:func:`export_onnx` writes a model with ``torch.onnx.export`` (the dynamo exporter; needs
``onnx`` and ``onnxscript``: ``pip install "ovdense[onnx]"``); :func:`run_onnx` runs one with
ONNX Runtime on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .heads import max_over_synonyms
from .segmentors import Segmentor, rescale_size, sliding_windows, stitch_windows
from .text import ClassEmbeddings, Vocabulary

__all__ = [
    "DYNAMIC_SIZE_STRATEGIES",
    "FixedVocabularySegmentor",
    "TextConditionedBackbone",
    "check_exportable",
    "dynamic_size_supported",
    "export_backbone_onnx",
    "export_onnx",
    "export_segmentor_onnx",
    "run_onnx",
]


#: Strategies whose backbone graph exports with a dynamic image size, checked against eager at
#: other sizes with ONNX Runtime (``tests/modeling/test_onnx_export.py``).
#: (``scclip`` and ``resclip`` trace only at a fixed size: their multi-level attention adds guards
#: on the grid that torch.export cannot prove for every size; ``proxy`` is not checked.)
DYNAMIC_SIZE_STRATEGIES = ("vanilla", "maskclip", "sclip", "clearclip", "naclip", "catseg")


def dynamic_size_supported(seg: Segmentor) -> bool:
    """Whether :class:`FixedVocabularySegmentor` of ``seg`` can take any image size: the
    segmentor neither resizes (``short_side=None``) nor slides windows (``window=None``), and
    its strategy is one of :data:`DYNAMIC_SIZE_STRATEGIES`."""
    name = getattr(getattr(seg.backbone, "strategy", None), "name", None)
    return seg.short_side is None and seg.window is None and name in DYNAMIC_SIZE_STRATEGIES


def _size_dims(seg: Segmentor) -> dict[int, Any]:
    """``torch.export`` dims of a dynamic image height and width (at least two patches)."""
    from torch.export import Dim

    p = int(seg.backbone.patch_size)
    return {2: Dim("height", min=2 * p, max=8192), 3: Dim("width", min=2 * p, max=8192)}


def check_head_exportable(seg: Segmentor) -> None:
    """Raise ``ValueError`` for a strategy that cannot be traced (``not_exportable``, e.g.
    CorrCLIP's) or a head that takes more than ``(dense, embeds [N, D])`` (e.g. CAT-Seg's:
    per-template embeddings and intermediate blocks), which these graphs do not feed; such a
    head exports on its own with ``torch.export`` (tensor in / tensor out)."""
    strategy = getattr(seg.backbone, "strategy", None)
    reason = getattr(strategy, "not_exportable", None)
    if reason:
        raise ValueError(
            f"The strategy {getattr(strategy, 'name', '?')!r} cannot be exported: {reason}. "
            "Run it in PyTorch, or export another strategy."
        )
    if seg.head_per_template or seg.head_layers:
        raise ValueError(
            f"The head {type(seg.head).__name__} takes per-template embeddings or intermediate "
            "block outputs, which the ONNX graphs of ovdense do not feed yet; export the head "
            "on its own (torch.export) or use a head taking (dense, embeds [N, D])."
        )


def check_exportable(seg: Segmentor) -> None:
    """Raise ``ValueError`` naming the first option of ``seg`` the ONNX graph cannot hold."""
    check_head_exportable(seg)
    problems = []
    if seg.pamr is not None:
        problems.append("PAMR (pamr=None)")
    if seg.post_refiner is not None:
        problems.append("a post_refiner (post_refiner=None)")
    if seg.aggregator is not None:
        problems.append("the splice-then-segment aggregator (aggregator=None)")
    if seg.area_thd is not None:
        problems.append("area_thd (area_thd=None)")
    if seg.saliency_rule is not None and seg.background_rule is not False:
        problems.append("the saliency rule (background_rule=False)")
    if seg.decode_order != "ovdense":
        problems.append(f"the {seg.decode_order!r} decode order (decode_order='ovdense')")
    if seg.global_view:
        problems.append("a global view (global_view=False)")
    if seg.fixed_size is not None:
        problems.append("a fixed input size (fixed_size=None)")
    if seg.crop_resize is not None:
        problems.append("crop resizing (crop_resize=None)")
    if seg.head_raw_features:
        problems.append("a head on unnormalised features (head.raw_features=False)")
    if problems:
        raise ValueError(
            "The ONNX graph holds the backbone, refiner, head, resize, windows, softmax, "
            "synonyms, prob_thd and argmax only; this segmentor also uses "
            + ", ".join(problems)
            + ". Turn those off (as in parentheses) or export the backbone alone "
            "(TextConditionedBackbone / --backbone-only)."
        )


class FixedVocabularySegmentor(nn.Module):
    """A segmentor with one vocabulary's text embeddings as buffers (see the module docstring).

    Args:
        seg: the segmentor (its backbone, refiner, head and decoding settings are used).
        vocabulary: the classes (encoded once here, eagerly, by ``seg``'s text encoder).
        image_size: ``(H, W)`` the graph is built for.
        prob_thd: the background threshold baked in (default: the segmentor's).
    """

    text_embeds: Tensor
    name_to_class: Tensor

    def __init__(
        self,
        seg: Segmentor,
        vocabulary: Vocabulary | Sequence[str | Sequence[str]],
        image_size: tuple[int, int],
        prob_thd: float | None = None,
    ) -> None:
        super().__init__()
        check_exportable(seg)
        self.seg = seg
        text: ClassEmbeddings = seg.encode_text(vocabulary)
        self.vocabulary = text.vocabulary
        self.register_buffer("text_embeds", text.embeds.detach().clone())
        self.register_buffer("name_to_class", text.name_to_class.detach().clone())
        self.num_classes = text.num_classes
        thd = seg._prob_thd(prob_thd)
        self.prob_thd = thd
        self.background = seg.resolve_background(text.vocabulary) if thd > 0 else 0
        self.image_size = (int(image_size[0]), int(image_size[1]))

    def _dense(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised crops -> (dense features, head scores) per crop."""
        out, _ = self.seg.forward_features(x)
        dense = out.dense
        return dense, self.seg.head(dense, self.text_embeds)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``images [B, 3, H, W]`` in ``[0, 1]`` -> ``(logits [B, N, H, W], labels [B, H, W])``."""
        seg = self.seg
        b = images.shape[0]
        hi, wi = images.shape[-2], images.shape[-1]  # symbolic when exported dynamic
        hr, wr = rescale_size(hi, wi, seg.short_side, seg.max_long_side)
        x = images
        if (hr, wr) != (hi, wi):
            x = F.interpolate(images, size=(hr, wr), mode="bilinear", align_corners=False)
        x = seg.backbone.normalize(x)
        windows = sliding_windows(hr, wr, seg.window, seg.stride)
        crops = torch.cat([x[:, :, y1:y2, x1:x2] for (y1, y2, x1, x2) in windows], dim=0)
        _, scores = self._dense(crops)
        logits = stitch_windows(scores, windows, b, (hr, wr), (hi, wi), len(windows) * b)
        logits = logits * seg.logit_scale
        probs = torch.softmax(logits, dim=1)
        probs = max_over_synonyms(probs, self.name_to_class, self.num_classes)
        top, labels = probs.max(dim=1)
        if self.prob_thd > 0:
            labels = torch.where(top < self.prob_thd, self.background, labels)
        return logits, labels

    def example_input(self, batch: int = 1) -> Tensor:
        """A random input of the exported size."""
        return torch.rand(batch, 3, *self.image_size, device=self.text_embeds.device)


class TextConditionedBackbone(nn.Module):
    """The dense backbone (and refiner) with the head: ``(images, text_embeds) -> scores
    [B, N, h, w]`` (see the module docstring).

    Args:
        seg: the segmentor whose ``forward_features`` and ``head`` are exported.
    """

    def __init__(self, seg: Segmentor) -> None:
        super().__init__()
        check_head_exportable(seg)
        self.seg = seg

    def forward(self, images: Tensor, text_embeds: Tensor) -> Tensor:
        """``images [B, 3, H, W]`` normalised, ``text_embeds [N, D]`` -> ``[B, N, h, w]``."""
        out, _ = self.seg.forward_features(images)
        return self.seg.head(out.dense, text_embeds)


def export_onnx(
    model: nn.Module,
    args: tuple[Tensor, ...],
    path: str | os.PathLike,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: Any = None,
    opset: int = 18,
) -> Path:
    """``torch.onnx.export`` (dynamo) of ``model`` at ``args`` to ``path`` (one file, weights
    inside). ``dynamic_shapes`` as for ``torch.export`` (e.g. ``{"images": {2: Dim("h"), ...}}``).
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "ONNX export needs onnx and onnxscript: pip install 'ovdense[onnx]'."
        ) from e
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            args,
            dynamo=True,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            external_data=False,
            optimize=True,
            verify=False,
        )
    assert program is not None
    program.save(str(path), external_data=False)
    return path


def run_onnx(
    path: str | os.PathLike, inputs: dict[str, Tensor], threads: int | None = None
) -> tuple[dict[str, Any], Any]:
    """Run an ONNX file with ONNX Runtime (CPU): ``{name: array}`` of the outputs, and the
    session (reuse it: ``session.run(None, feeds)``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    feeds = {k: v.detach().cpu().numpy() for k, v in inputs.items()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True)), session


def export_segmentor_onnx(
    seg: Segmentor,
    vocabulary: Vocabulary | Sequence[str | Sequence[str]],
    image_size: tuple[int, int],
    path: str | os.PathLike,
    batch: int = 1,
    prob_thd: float | None = None,
    dynamic_size: bool | None = None,
) -> tuple[Path, FixedVocabularySegmentor]:
    """Write :class:`FixedVocabularySegmentor` of ``seg`` and ``vocabulary`` for ``batch``
    images (input ``images``, outputs ``logits`` and ``labels``).

    Args:
        image_size: ``(H, W)`` of the example traced (the only size the graph takes unless
            it is dynamic).
        dynamic_size: ``None`` (default): any image size when :func:`dynamic_size_supported`,
            else ``image_size`` only; ``True``: any size, or ``ValueError`` when the segmentor
            resizes or slides windows; ``False``: ``image_size`` only.
    """
    supported = dynamic_size_supported(seg)
    if dynamic_size and not supported:
        raise ValueError(
            "A dynamic image size needs a segmentor that neither resizes nor slides windows "
            f"(short_side=None, window=None; now {seg.short_side}, {seg.window}) and a strategy "
            f"in {DYNAMIC_SIZE_STRATEGIES}; export the backbone alone for any size, or one "
            "file per image size."
        )
    model = FixedVocabularySegmentor(seg, vocabulary, image_size, prob_thd).eval()
    dynamic = {"images": _size_dims(seg)} if (supported and dynamic_size is not False) else None
    out = export_onnx(
        model, (model.example_input(batch),), path, ["images"], ["logits", "labels"], dynamic
    )
    return out, model


def export_backbone_onnx(
    seg: Segmentor,
    image_size: tuple[int, int],
    path: str | os.PathLike,
    dynamic_size: bool | None = None,
) -> tuple[Path, TextConditionedBackbone]:
    """Write :class:`TextConditionedBackbone` of ``seg`` (inputs ``images`` normalised and
    ``text_embeds``, output ``scores``; the batch and the number of names dynamic).

    Args:
        image_size: ``(H, W)`` of the example traced.
        dynamic_size: ``None`` (default): any height and width (at least two patches) for a
            strategy in :data:`DYNAMIC_SIZE_STRATEGIES`, else ``image_size`` only; ``True``:
            dynamic, or ``ValueError`` for another strategy; ``False``: ``image_size`` only.
    """
    from torch.export import Dim

    name = getattr(getattr(seg.backbone, "strategy", None), "name", None)
    supported = name in DYNAMIC_SIZE_STRATEGIES
    if dynamic_size and not supported:
        raise ValueError(
            f"The strategy {name!r} is not among those exported with a dynamic image size "
            f"{DYNAMIC_SIZE_STRATEGIES}; export it for one size (dynamic_size=False)."
        )
    model = TextConditionedBackbone(seg).eval()
    dev = next(seg.parameters()).device
    images = torch.randn(2, 3, *image_size, device=dev)
    dim = int(seg.text_encoder(["a"]).embeds.shape[-1])
    embeds = F.normalize(torch.randn(3, dim, device=dev), dim=-1)
    dims: dict[int, Any] = {0: Dim("batch", min=1, max=1024)}
    if supported and dynamic_size is not False:
        dims.update(_size_dims(seg))
    dynamic = {"images": dims, "text_embeds": {0: Dim("names")}}
    out = export_onnx(model, (images, embeds), path, ["images", "text_embeds"], ["scores"], dynamic)
    return out, model
