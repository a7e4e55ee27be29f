"""``OVDenseSegmentor``: any ovdense preset as an mmseg 1.x segmentor.

The model runs ovdense's own inference (resize to the preset's short side, sliding windows,
decoding with the preset's logit scale, thresholds and PAMR) on each image the mmseg pipeline
gives it, and returns mmseg's ``SegDataSample`` with ``pred_sem_seg`` (labels ``[1, H, W]``) and
``seg_logits`` (class probabilities ``[C, H, W]``, after the softmax and the max over each
class's names, as the SCLIP-family repositories store them), both at the image's
``ori_shape``.

Two ways to feed images:

- **ovdense resizes** (the shipped configs): the pipeline loads the image without ``Resize``;
  ovdense scales it to the preset's short side itself and returns maps at the input size, which
  is ``ori_shape``.
- **mmseg resizes** (the official repositories' configs): the pipeline has ``Resize(scale=(2048,
  S), keep_ratio=True)`` with ``S`` the preset's short side, so the image arrives at the size
  ovdense would resize to and ovdense does not resize again; the merged window maps are then
  resized (bilinear) to ``ori_shape`` and PAMR, if any, runs there on the image resized to
  ``ori_shape``, as in SCLIP's and NACLIP's ``predict``. This reproduces the official code's
  order exactly, including OpenCV's 8-bit resize of the image.

Region maps (CorrCLIP's attention scope and map correction): from the preset's mask source,
or, with ``region_dir``, read from files generated beforehand, one ``<image stem>.npz`` per
image holding an integer map at the image's original size (the layout of CorrCLIP's
``instance_mask_path``: key ``instance_mask``, the smallest value where no mask lies). In the
mmseg-resize mode the strategy gets the map resized (nearest) to the resized image and the
label refiner the map at ``ori_shape``, as the official code does.

The vocabulary, in order of precedence: ``classnames`` (a class-name file, read with
``class_rule``, or a list of classes), the benchmark's shipped class-name file read with the
method's rule (``benchmark=...``), or the test dataset's ``metainfo['classes']`` set by
:class:`OVDenseVocabularyHook` before the test loop.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.structures import PixelData
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import HOOKS, MODELS
from mmseg.structures import SegDataSample
from torch import Tensor

from ...config import LazyCall, LazyConfig, instantiate
from ...data.catalog import get_metadata
from ...data.metadata import PARSE_RULES, SemSegMetadata
from ...model_zoo import check_preset_kind, clip_source_overrides, get_config
from ...modeling.clip import load_clip
from ...modeling.segmentors import Segmentor
from ...utils.regions import REGION_KEY, read_region_map
from ...vocabulary import Vocabulary, is_background_class

__all__ = ["OVDenseSegmentor", "OVDenseVocabularyHook", "read_class_file"]


def read_class_file(path: str | os.PathLike, rule: str = "unified") -> Vocabulary:
    """A class-name file (one class per line, line ``i`` = label ``i``) read with one of
    ovdense's class-name rules (:data:`~ovdense.data.metadata.PARSE_RULES`): ``"sclip"`` /
    ``"naclip"`` / ``"unified"`` split a line on ``", "`` and ``"; "``, ``"clearclip"`` on
    ``","``, ``"proxyclip"`` on ``"; "`` (docs/protocols.md#class-name-parsing). These are the
    ``name_path`` files of the SCLIP-family configs."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise FileNotFoundError(f"Class-name file not found: {p}")
    lines = [ln for ln in p.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    first = [n.strip() for n in lines[0].replace("; ", ", ").split(", ")] if lines else []
    meta = SemSegMetadata(
        name=p.stem,
        classnames_file=str(p),
        num_classes=len(lines),
        ignore_label=255 if len(lines) <= 255 else 65535,
        # a background class 0 as in the benchmarks' files: named like background, or several
        # background words on one line (VOC21, COCO-Object)
        background_index=0 if first and (is_background_class(first) or len(first) > 1) else None,
        reduce_zero_label=False,
    )
    return meta.vocabulary(rule)


@MODELS.register_module()
class OVDenseSegmentor(BaseSegmentor):
    """An ovdense preset as an mmseg segmentor (inference only: ``predict`` / ``tensor``).

    Args:
        preset: An ovdense segmentor preset (``"naclip"``, ``"sclip"``, ``"seg/..."``) or a
            config file path (:func:`ovdense.build_segmentor`).
        benchmark: An ovdense benchmark name (``"voc21"``, ``"ade20k_150"``, ...: the catalog of
            docs/protocols.md#benchmarks). With it the preset runs under ``protocol`` with that
            benchmark's settings (``configs/eval/<method>.py``: logit scale, thresholds,
            short side...), its background class, and, unless ``classnames`` is given, its
            shipped class-name file read with the method's rule.
        protocol: ``"paper"`` (each method's own settings) or ``"unified"``.
        classnames: A class-name file (read with ``class_rule``) or a list of classes (one item
            per class, synonyms separated by ``|`` or ``,``); ``None``: the benchmark's file, or
            the dataset's ``metainfo['classes']`` (:class:`OVDenseVocabularyHook`).
        class_rule: How a class-name file's lines are split (one of
            :data:`~ovdense.data.metadata.PARSE_RULES`); default: the method's rule with a
            benchmark, else ``"unified"``.
        model_name, pretrained, checkpoint: The CLIP weight source, as ``--model``,
            ``--pretrained``, ``--checkpoint`` of ovdense's commands
            (:func:`ovdense.model_zoo.clip_source_overrides`).
        clip: Keyword arguments of :func:`ovdense.load_clip` replacing the preset's CLIP
            entirely (e.g. ``dict(config={...}, seed=0)`` for a tiny random model).
        overrides: ``"model.key=value"`` strings applied last (``"model.window=None"``).
        background_index: The class the thresholds assign; default: the benchmark's, else the
            class named like background.
        data_preprocessor: Default: ``SegDataPreProcessor`` converting mmcv's BGR images to RGB
            without normalising (ovdense normalises with the CLIP's own mean and std).
        region_dir: A folder of region maps generated beforehand (``<image stem>.npz``, see
            the module docstring) used instead of the preset's mask source (which is then not
            built: ``model.mask_source=None``).
        region_key: The array of each ``.npz`` file holding the map.
    """

    def __init__(
        self,
        preset: str = "naclip",
        benchmark: str | None = None,
        protocol: str = "paper",
        classnames: str | Sequence[str] | None = None,
        class_rule: str | None = None,
        model_name: str | None = None,
        pretrained: str | None = None,
        checkpoint: str | None = None,
        clip: dict[str, Any] | None = None,
        overrides: Sequence[str] = (),
        background_index: int | None = None,
        data_preprocessor: dict[str, Any] | None = None,
        init_cfg: dict[str, Any] | None = None,
        region_dir: str | os.PathLike | None = None,
        region_key: str = REGION_KEY,
    ) -> None:
        # built here from mmseg's registry (the config's default_scope may be unset)
        pre = MODELS.build(data_preprocessor or dict(type="SegDataPreProcessor", bgr_to_rgb=True))
        super().__init__(data_preprocessor=pre, init_cfg=init_cfg)
        if not isinstance(self.data_preprocessor, SegDataPreProcessor):
            raise TypeError("OVDenseSegmentor needs a SegDataPreProcessor (or the default one).")
        if self.data_preprocessor._enable_normalize:
            raise ValueError(
                "OVDenseSegmentor takes images in 0..255 (ovdense normalises with the CLIP's "
                "mean and std): drop mean/std from the data_preprocessor."
            )
        if class_rule is not None and class_rule not in PARSE_RULES:
            raise ValueError(f"class_rule must be one of {PARSE_RULES}, got {class_rule!r}.")
        sources = clip_source_overrides(model_name, pretrained, checkpoint)
        self.preset = str(preset)
        self.benchmark = benchmark
        self.protocol = protocol
        if benchmark is not None:
            from ...evaluation.runner import resolve_eval_config

            cfg = resolve_eval_config(self.preset, benchmark, protocol)
            meta = get_metadata(benchmark)
            cfg.model.background_index = meta.background_index
            rule = class_rule or str(cfg.class_rule)
            vocab: Vocabulary | None = None if classnames is not None else meta.vocabulary(rule)
        else:
            check_preset_kind(self.preset, ("seg",))
            cfg = get_config(self.preset)
            rule = class_rule or "unified"
            vocab = None
        if clip is not None:
            cfg.model.clip = LazyCall(load_clip)(**dict(clip))
        if background_index is not None:
            cfg.model.background_index = int(background_index)
        self.region_dir = None if region_dir is None else Path(region_dir).expanduser()
        self.region_key = str(region_key)
        if self.region_dir is not None:
            if not self.region_dir.is_dir():
                raise FileNotFoundError(f"region_dir is not a folder: {self.region_dir}")
            sources = [*sources, "model.mask_source=None"]
        cfg = LazyConfig.apply_overrides(cfg, [*sources, *overrides])
        seg = instantiate(cfg.model)
        if not isinstance(seg, Segmentor):
            raise TypeError(f"{preset!r} builds a {type(seg).__name__}, not an ovdense Segmentor.")
        self.seg: Segmentor = seg
        self.class_rule = rule
        if classnames is not None:
            vocab = (
                read_class_file(classnames, rule)
                if isinstance(classnames, str | os.PathLike)
                else Vocabulary.coerce(list(classnames))
            )
        self.vocabulary: Vocabulary | None = vocab
        self.align_corners = False

    # -- vocabulary ------------------------------------------------------------------------
    def set_vocabulary(self, classes: Vocabulary | Sequence[str | Sequence[str]]) -> None:
        """Use these classes (class ``i`` = label ``i``)."""
        self.vocabulary = Vocabulary.coerce(classes)

    def _vocabulary(self) -> Vocabulary:
        if self.vocabulary is None:
            raise RuntimeError(
                "OVDenseSegmentor has no vocabulary: give model.classnames (a class-name file or "
                "a list), model.benchmark, or add custom_hooks=[dict(type='OVDenseVocabularyHook')]"
                " to take the test dataset's metainfo['classes']."
            )
        return self.vocabulary

    # -- mmseg API -------------------------------------------------------------------------
    def _images(self, inputs: Tensor, metas: list[dict[str, Any]]) -> list[Tensor]:
        out = []
        for i, meta in enumerate(metas):
            h, w = meta.get("img_shape", inputs.shape[-2:])[:2]
            out.append((inputs[i : i + 1, :, :h, :w] / 255.0).clamp_(0.0, 1.0))
        return out

    @torch.no_grad()
    def predict(self, inputs: Tensor, data_samples: list[SegDataSample] | None = None) -> list:
        """``inputs [B, 3, H, W]`` RGB in 0..255 -> ``SegDataSample`` with ``pred_sem_seg``
        ``[1, h, w]`` and ``seg_logits`` (class probabilities ``[C, h, w]``) at ``ori_shape``."""
        if data_samples is None:
            h, w = inputs.shape[-2:]
            data_samples = [
                SegDataSample(metainfo=dict(ori_shape=(h, w), img_shape=(h, w)))
                for _ in range(inputs.shape[0])
            ]
        metas = [s.metainfo for s in data_samples]
        text = self.seg.encode_text(self._vocabulary())
        for image, meta, sample in zip(self._images(inputs, metas), metas, data_samples):
            oh, ow = meta.get("ori_shape", image.shape[-2:])[:2]
            ori = (int(oh), int(ow))
            regions = None if self.region_dir is None else self.read_regions(meta, ori)
            # the vocabulary goes to encode_image too: a strategy may need it (ResCLIP's SFR)
            feats = self.seg.encode_image(
                image.to(self.seg.device),
                text=text,
                regions=None if regions is None else _resize_regions(regions, image.shape[-2:]),
            )
            if ori != tuple(feats.image_size):
                # mmseg resized the image: maps (and PAMR's image, the label refiner's regions)
                # at ori_shape, as the official repositories do
                kept = feats.images
                if kept is not None:
                    kept = F.interpolate(kept, size=ori, mode="bilinear", align_corners=False)
                if regions is None and feats.regions is not None:
                    regions = _resize_regions(feats.regions, ori)
                feats = dataclasses.replace(feats, image_size=ori, images=kept, regions=regions)
            out = self.seg.decode(feats, text, return_probs=True)
            assert out.probs is not None
            sample.set_data(
                {
                    "seg_logits": PixelData(data=out.probs[0]),
                    "pred_sem_seg": PixelData(data=out.labels[0:1]),
                }
            )
        return data_samples

    def read_regions(self, meta: dict[str, Any], size: tuple[int, int]) -> Tensor:
        """The region map ``[1, H, W]`` (int64) of the image of ``meta`` from ``region_dir``
        (:func:`~ovdense.utils.regions.read_region_map` of ``meta['img_path']``), checked to be
        ``size`` (its ``ori_shape``)."""
        assert self.region_dir is not None
        img_path = meta.get("img_path")
        if not img_path:
            raise ValueError(
                "region_dir needs each sample's img_path (mmseg's LoadImageFromFile sets it)."
            )
        return read_region_map(self.region_dir, img_path, size, self.region_key)[None]

    def _input_regions(
        self, metas: Sequence[dict[str, Any]] | None, size: Sequence[int]
    ) -> Tensor | None:
        """With ``region_dir``: the samples' region maps resized (nearest) to the input
        ``size``, ``[B, h, w]``; else ``None``."""
        if self.region_dir is None:
            return None
        if not metas:
            raise ValueError(
                "With region_dir the region maps are found by each sample's img_path: call the "
                "model with its data_samples (mode='predict', or mode='tensor' with samples)."
            )
        maps = []
        for meta in metas:
            oh, ow = meta.get("ori_shape", size)[:2]
            maps.append(_resize_regions(self.read_regions(meta, (int(oh), int(ow))), size))
        return torch.cat(maps)

    def _forward(self, inputs: Tensor, data_samples: list[SegDataSample] | None = None) -> Tensor:
        """The class probabilities ``[B, C, H, W]`` at the input size (``mode='tensor'``)."""
        text = self.seg.encode_text(self._vocabulary())
        images = (inputs / 255.0).clamp(0.0, 1.0).to(self.seg.device)
        metas = None if data_samples is None else [s.metainfo for s in data_samples]
        regions = self._input_regions(metas, images.shape[-2:])
        feats = self.seg.encode_image(images, text=text, regions=regions)
        out = self.seg.decode(feats, text, return_probs=True)
        assert out.probs is not None
        return out.probs

    def loss(self, inputs: Tensor, data_samples: list[SegDataSample]) -> dict:
        raise NotImplementedError(
            "OVDenseSegmentor is for inference (mmseg's test / val loops); ovdense trains its "
            "own modules with `ovdense train`."
        )

    def extract_feat(self, inputs: Tensor) -> Any:
        """The dense features of the ovdense backbone (windows of the resized images); with the
        vocabulary when one is set (a strategy such as ResCLIP's needs it)."""
        text = self.seg.encode_text(self.vocabulary) if self.vocabulary is not None else None
        images = (inputs / 255.0).clamp(0.0, 1.0).to(self.seg.device)
        regions = self._input_regions(None, images.shape[-2:])
        return self.seg.encode_image(images, text=text, regions=regions).dense

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        return self._forward(inputs)


def _resize_regions(regions: Tensor, size: Sequence[int]) -> Tensor:
    """``[B, H, W]`` region maps resized (nearest) to ``size``; unchanged at that size."""
    size = (int(size[0]), int(size[1]))
    if tuple(regions.shape[-2:]) == size:
        return regions
    out = F.interpolate(regions[:, None].double(), size=size, mode="nearest")
    return out[:, 0].to(regions.dtype)


@HOOKS.register_module()
class OVDenseVocabularyHook(Hook):
    """Before the test (and validation) loop, give every :class:`OVDenseSegmentor` without a
    vocabulary the dataset's ``metainfo['classes']`` (one name per class); with one, check
    that its number of classes equals the dataset's."""

    priority = "NORMAL"

    def _apply(self, runner: Any, dataloader: Any) -> None:
        classes = list(dataloader.dataset.metainfo.get("classes") or ())
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        if not isinstance(model, OVDenseSegmentor):
            return
        if model.vocabulary is None:
            if not classes:
                raise RuntimeError("The dataset's metainfo has no 'classes' to take.")
            model.set_vocabulary(Vocabulary(classes, synonym_sep=None))
        elif classes and len(classes) != model.vocabulary.num_classes:
            raise ValueError(
                f"The model's vocabulary has {model.vocabulary.num_classes} classes but the "
                f"dataset has {len(classes)}: labels would not match."
            )

    def before_test(self, runner: Any) -> None:
        self._apply(runner, runner.test_dataloader)

    def before_val(self, runner: Any) -> None:
        self._apply(runner, runner.val_dataloader)
