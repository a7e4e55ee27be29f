"""Class-agnostic mask sources: one image in, its masks out, from SAM, SAM 2 or anything else.

A :class:`MaskSource` is called with one RGB image (``uint8`` numpy array ``[H, W, 3]``) and
returns its class-agnostic masks as a ``bool`` tensor ``[N, H, W]`` (on the CPU):

* **ordering**: the source's own, documented per source (segment-anything's and SAM 2's
  automatic generators: the order of their records); the same image and settings always give
  the same masks in the same order. Consumers that need another order sort (e.g.
  :func:`~ovdense.utils.regions.masks_to_region_map` paints by area);
* **empty case**: an image without masks gives a ``[0, H, W]`` tensor, never ``None``.

Every source has :meth:`MaskSource.settings`, a JSON-able description of everything that
changes its masks (model, weights, generator options); :class:`CachedMaskSource` keys its
on-disk cache by the image's content hash and these settings, so the masks of one image are
computed once and shared by every method that reads them (CorrCLIP's attention scope and map
correction, :class:`~ovdense.sam.SamInstanceSegmenter`, the demo).

Registry :data:`MASK_SOURCES`: ``"sam"`` (segment-anything's automatic masks,
:class:`SamMaskSource`) and ``"sam2"`` (SAM 2's, :class:`Sam2MaskSource`; needs the optional
``sam2`` package: ``pip install "ovdense[sam2]"``); ``"grid"`` (:class:`GridMaskSource`, a fixed
grid of rectangles: no model, for timing a mask-reading method without a mask generator).
:func:`build_mask_source` builds one by
name; a config writes ``L(SamMaskSource)(kind="vit_h", checkpoint=...)``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..utils.io import atomic_write, atomic_write_text
from ..utils.regions import masks_to_region_map
from ..utils.registry import Registry
from .instances import MaskGenerator, MaskGeneratorOptions, _stack_records
from .model import SAM_KINDS, build_sam, missing_checkpoint_message

__all__ = [
    "MASK_SOURCES",
    "SAM2_DEFAULTS",
    "CachedMaskSource",
    "GridMaskSource",
    "MaskSource",
    "Sam2MaskSource",
    "SamMaskSource",
    "build_mask_source",
    "check_rgb_image",
    "image_digest",
    "masks_to_region_map",
    "require_sam2",
]

MASK_SOURCES: Registry[type[MaskSource]] = Registry("mask source")
MASK_SOURCES.__doc__ = """Registered objects are MaskSource subclasses: calling an instance with
an ``[H, W, 3]`` uint8 RGB array returns ``[N, H, W]`` bool masks (CPU tensor; ``N`` may be 0);
``settings()`` returns a JSON-able dict of everything that changes the masks. The registry sets
the class's ``name``."""


def check_rgb_image(image: Any) -> np.ndarray:
    """``image`` as a C-contiguous ``[H, W, 3]`` uint8 array, or a ``ValueError`` saying what
    a mask source takes (paths and other forms: :func:`ovdense.utils.image.load_image`)."""
    if isinstance(image, Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"A mask source takes an [H, W, 3] uint8 RGB numpy array, got {type(image).__name__}; "
            "load files with ovdense.utils.image.load_image(path)."
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            "A mask source takes an [H, W, 3] uint8 RGB array, got "
            f"{image.dtype} {tuple(image.shape)}; load_image() converts other forms."
        )
    if min(image.shape[:2]) < 1:
        raise ValueError(f"Empty image {tuple(image.shape)}.")
    return np.ascontiguousarray(image)


def image_digest(image: np.ndarray) -> str:
    """SHA-256 of an image's content: its shape, dtype and pixel bytes (hex)."""
    h = hashlib.sha256()
    h.update(f"{image.dtype.str}:{tuple(image.shape)}:".encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def module_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and values), hex."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _file_identity(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path).expanduser()
    return {"file": p.name, "bytes": p.stat().st_size if p.is_file() else None}


class MaskSource:
    """Class-agnostic masks of one image (see the module docstring for the contract).

    Subclasses implement :meth:`generate` (on a checked image) and :meth:`settings`;
    registering one (``@MASK_SOURCES.register("name")``) sets its ``name``.
    """

    name: str = ""

    def __call__(self, image: np.ndarray) -> Tensor:
        """Args:
            image: ``[H, W, 3]`` uint8 RGB.

        Returns:
            ``[N, H, W]`` bool CPU tensor (``N = 0`` without masks), in the source's order.
        """
        rgb = check_rgb_image(image)
        masks = self.generate(rgb)
        masks = torch.as_tensor(masks).to("cpu", torch.bool)
        h, w = rgb.shape[:2]
        if masks.ndim != 3 or tuple(masks.shape[1:]) != (h, w):
            raise ValueError(
                f"Mask source {type(self).__name__} returned {tuple(masks.shape)} for a {h}x{w} "
                f"image; a mask source returns [N, {h}, {w}] masks."
            )
        return masks

    def generate(self, image: np.ndarray) -> Tensor | np.ndarray:
        """The masks ``[N, H, W]`` of a checked ``[H, W, 3]`` uint8 image."""
        raise NotImplementedError  # pragma: no cover - abstract

    def settings(self) -> dict[str, Any]:
        """Everything that changes the masks, JSON-able (the cache key of
        :class:`CachedMaskSource`)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def region_map(self, image: np.ndarray, order: str = "area_ascending") -> Tensor:
        """The masks painted into one ``[H, W]`` int32 region map (``0``: no mask), see
        :func:`~ovdense.utils.regions.masks_to_region_map`."""
        return masks_to_region_map(self(image), order)


def _weights_settings(
    model: nn.Module | None,
    checkpoint: str | os.PathLike | None,
    generator: Any,
    cache_id: str | None,
    digest: list[str],
) -> dict[str, Any]:
    """The weights part of a source's settings: ``cache_id`` when given, else the checkpoint
    file (name and size), else a digest of the model's state dict (computed once)."""
    if cache_id is not None:
        return {"cache_id": str(cache_id)}
    if checkpoint is not None:
        return {"checkpoint": _file_identity(checkpoint)}
    if model is not None:
        if not digest:
            digest.append(module_digest(model))
        return {"state_dict_sha256": digest[0]}
    own = getattr(generator, "settings", None)
    if callable(own):
        return {"generator": own()}
    raise ValueError(
        f"A mask source over a {type(generator).__name__} cannot say what its masks depend on; "
        "give it cache_id='...' (any string naming the generator and its weights) to cache it."
    )


@MASK_SOURCES.register("sam")
class SamMaskSource(MaskSource):
    """segment-anything's automatic masks (``SamAutomaticMaskGenerator``, binary masks).

    Ordering: the generator's record order. The generator is the one
    :class:`~ovdense.sam.SamInstanceSegmenter` runs (:class:`~ovdense.sam.MaskGeneratorOptions`,
    segment-anything's names and defaults).

    Args:
        sam: a segment-anything ``Sam`` (:func:`~ovdense.sam.build_sam`,
            :func:`~ovdense.sam.tiny_sam`); default: built from ``kind`` and ``checkpoint``.
        kind: ``"vit_b"``, ``"vit_l"`` or ``"vit_h"`` (with ``checkpoint``).
        checkpoint: the official SAM file of ``kind`` (read with ``weights_only=True``).
        options: :class:`~ovdense.sam.MaskGeneratorOptions` or a mapping of its fields.
        generator: any object with ``generate(image) -> records`` instead of one built from
            ``sam`` (e.g. a configured ``SamAutomaticMaskGenerator``); give ``cache_id`` to
            cache it.
        device: where a SAM built here runs.
        cache_id: a name of the model and weights for the cache key (default: the checkpoint
            file's name and size, else a digest of ``sam``'s weights).

    Raises:
        ValueError: neither ``sam``, ``generator`` nor ``checkpoint`` (the message names the
            file to download), or an unknown ``kind``.
    """

    def __init__(
        self,
        sam: nn.Module | None = None,
        kind: str = "vit_b",
        checkpoint: str | os.PathLike | None = None,
        options: MaskGeneratorOptions | Mapping[str, Any] | None = None,
        *,
        generator: MaskGenerator | None = None,
        device: str | torch.device = "cpu",
        cache_id: str | None = None,
    ) -> None:
        if kind not in SAM_KINDS:
            raise ValueError(f"SAM kind must be one of {SAM_KINDS}, got {kind!r}.")
        if sam is None and generator is None and checkpoint is None:
            raise ValueError(missing_checkpoint_message(kind, flag="checkpoint="))
        if isinstance(options, Mapping):
            options = MaskGeneratorOptions(**options)
        self.options = options or MaskGeneratorOptions()
        self.kind = kind
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        if sam is None and generator is None:
            sam = build_sam(kind, checkpoint=checkpoint).to(device)
        self.sam = sam
        self._generator = generator
        self.cache_id = cache_id
        self._digest: list[str] = []

    @property
    def generator(self) -> MaskGenerator:
        """The automatic mask generator (built on first use)."""
        if self._generator is None:
            assert self.sam is not None
            self._generator = self.options.build(self.sam)
        return self._generator

    def generate_with_scores(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``([N, H, W] bool, [N] float32 predicted IoU)`` of an ``[H, W, 3]`` uint8 image
        (IoU 1.0 where the generator gives none)."""
        rgb = check_rgb_image(image)
        with torch.no_grad():
            records = self.generator.generate(rgb)
        return _stack_records(records, rgb.shape[:2])

    def generate(self, image: np.ndarray) -> np.ndarray:
        return self.generate_with_scores(image)[0]

    def settings(self) -> dict[str, Any]:
        weights = _weights_settings(
            None if self._generator is not None and self.sam is None else self.sam,
            self.checkpoint,
            self._generator,
            self.cache_id,
            self._digest,
        )
        return {"source": "sam", "kind": self.kind, **weights, "options": asdict(self.options)}


@MASK_SOURCES.register("grid")
class GridMaskSource(MaskSource):
    """A fixed ``rows x cols`` grid of rectangles covering the image (cell ``(i, j)`` spans rows
    ``i * H // rows .. (i + 1) * H // rows``, likewise for columns), in row-major order: the same
    masks for every image of a size, computed in no time. Synthetic: for timing a method that
    reads masks (CorrCLIP) apart from the mask generator (``ovdense benchmark``), not for results.

    Raises:
        ValueError: ``rows`` or ``cols`` below 1.
    """

    def __init__(self, rows: int = 4, cols: int = 4) -> None:
        if int(rows) < 1 or int(cols) < 1:
            raise ValueError(f"rows and cols must be >= 1, got {rows} and {cols}.")
        self.rows, self.cols = int(rows), int(cols)

    def generate(self, image: np.ndarray) -> Tensor:
        h, w = image.shape[:2]
        ys = torch.arange(h) * self.rows // h  # [H] row of the grid of each pixel row
        xs = torch.arange(w) * self.cols // w  # [W]
        cell = ys[:, None] * self.cols + xs[None, :]  # [H, W]
        return cell[None] == torch.arange(self.rows * self.cols)[:, None, None]

    def settings(self) -> dict[str, Any]:
        return {"source": "grid", "rows": self.rows, "cols": self.cols}


#: SAM 2's ``SAM2AutomaticMaskGenerator`` options and their defaults (sam2's own).
SAM2_DEFAULTS: dict[str, Any] = {
    "points_per_side": 32,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.8,
    "stability_score_thresh": 0.95,
    "stability_score_offset": 1.0,
    "mask_threshold": 0.0,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "crop_nms_thresh": 0.7,
    "crop_overlap_ratio": 512 / 1500,
    "crop_n_points_downscale_factor": 1,
    "min_mask_region_area": 0,
    "use_m2m": False,
    "multimask_output": True,
}


def require_sam2() -> Any:
    """``import sam2``, or an ``ImportError`` naming the extra that installs it."""
    try:
        import sam2
    except ImportError as err:
        raise ImportError(
            'SAM 2 masks need the optional sam2 package: pip install "ovdense[sam2]" '
            f"(or pip install sam2); import failed with: {err}."
        ) from None
    return sam2


def _sam2_postprocessing(model: nn.Module) -> bool:
    """Whether a SAM 2 model was built with ``apply_postprocessing`` (its mask decoder falls
    back to multi-mask output when a single mask is unstable)."""
    decoder = getattr(model, "sam_mask_decoder", None)
    return bool(getattr(decoder, "dynamic_multimask_via_stability", False))


def _sam2_model_settings(model: nn.Module) -> dict[str, Any]:
    """What changes a SAM 2 model's masks beyond its weights: its input size and its mask
    decoder's dynamic multi-mask settings."""
    decoder = getattr(model, "sam_mask_decoder", None)
    names = ("dynamic_multimask_stability_delta", "dynamic_multimask_stability_thresh")
    return {
        "type": type(model).__name__,
        "image_size": getattr(model, "image_size", None),
        **{n: getattr(decoder, n, None) for n in names},
    }


@MASK_SOURCES.register("sam2")
class Sam2MaskSource(MaskSource):
    """SAM 2's automatic masks (``sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator``,
    binary masks). Needs the optional ``sam2`` package (``pip install "ovdense[sam2]"``).

    Ordering: the generator's record order; the masks are exactly those of a
    ``SAM2AutomaticMaskGenerator(model, output_mode="binary_mask", **options)`` on the same image
    (checked against sam2 1.1.0 in ``tests/sam/test_sam2_source.py``).

    Args:
        model: a SAM 2 model (``sam2.build_sam.build_sam2(...)``); default: built from
            ``config`` and ``checkpoint``.
        config: sam2's model config name; default ``"sam2_hiera_l.yaml"`` (SAM 2 Hiera-L,
            CorrCLIP's) when a model is built here; ``"configs/sam2.1/sam2.1_hiera_l.yaml"`` for
            SAM 2.1. With ``model`` given it is only a label in :meth:`settings`.
        checkpoint: the official file of that model (``sam2_hiera_large.pt``: a dict with the
            state dict under ``"model"``, or a bare state dict), read with ``weights_only=True``
            and loaded strictly.
        device: where a model built here runs (a given ``model`` stays where it is).
        apply_postprocessing: sam2's ``build_sam2`` option for a model built here (CorrCLIP:
            ``False``; sam2's own default is ``True``); a given ``model``'s mask decoder is read
            instead.
        generator: any object with ``generate(image) -> records`` instead (tests; give
            ``cache_id`` to cache it).
        cache_id: a name of the model and weights for the cache key.
        **options: ``SAM2AutomaticMaskGenerator`` options (:data:`SAM2_DEFAULTS`; unknown
            names are an error).

    Raises:
        ImportError: sam2 is not installed (naming the extra).
        ValueError: no model, generator nor checkpoint; an unknown option; a checkpoint that
            does not fit ``config``.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        config: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "cpu",
        apply_postprocessing: bool = False,
        generator: MaskGenerator | None = None,
        cache_id: str | None = None,
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - set(SAM2_DEFAULTS))
        if unknown:
            raise ValueError(
                f"Unknown SAM 2 generator options {unknown}; known: {sorted(SAM2_DEFAULTS)}."
            )
        if model is None and generator is None and checkpoint is None:
            raise ValueError(
                "SAM 2 masks need the model's checkpoint: download sam2_hiera_large.pt "
                "(https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt) "
                "and pass checkpoint=/path/sam2_hiera_large.pt."
            )
        if generator is None:
            require_sam2()
        self.options = {**SAM2_DEFAULTS, **options}
        if model is None and generator is None:
            config = config or "sam2_hiera_l.yaml"
            model = self._build(config, str(checkpoint), device, bool(apply_postprocessing))
        self.config = config
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        if model is not None:
            apply_postprocessing = _sam2_postprocessing(model)
        self.apply_postprocessing = bool(apply_postprocessing)
        self.model = model
        self._generator = generator
        self.cache_id = cache_id
        self._digest: list[str] = []

    @staticmethod
    def _build(config: str, checkpoint: str, device: Any, postprocess: bool) -> nn.Module:
        from sam2.build_sam import build_sam2

        from ..utils.weights import load_weights_file

        state = load_weights_file(checkpoint, what="SAM 2 checkpoint")
        if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
            state = state["model"]
        model = build_sam2(config, None, device="cpu", apply_postprocessing=postprocess)
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as err:
            first = str(err).strip().splitlines()[0]
            raise ValueError(
                f"SAM 2 checkpoint {checkpoint} does not fit config {config!r} ({first}); pass "
                "the config of the checkpoint's model, e.g. config='sam2_hiera_l.yaml' for "
                "sam2_hiera_large.pt, 'configs/sam2.1/sam2.1_hiera_l.yaml' for "
                "sam2.1_hiera_large.pt."
            ) from None
        return model.to(device).eval()

    @property
    def generator(self) -> MaskGenerator:
        """The automatic mask generator (built on first use)."""
        if self._generator is None:
            from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

            self._generator = SAM2AutomaticMaskGenerator(
                self.model, output_mode="binary_mask", **self.options
            )
        return self._generator

    def generate(self, image: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            records = self.generator.generate(image)
        return _stack_records(records, image.shape[:2])[0]

    def settings(self) -> dict[str, Any]:
        weights = _weights_settings(
            None if self._generator is not None and self.model is None else self.model,
            self.checkpoint,
            self._generator,
            self.cache_id,
            self._digest,
        )
        model = {} if self.model is None else {"model": _sam2_model_settings(self.model)}
        return {
            "source": "sam2",
            "config": self.config,
            "apply_postprocessing": self.apply_postprocessing,
            **model,
            **weights,
            "options": dict(sorted(self.options.items())),
        }


class CachedMaskSource(MaskSource):
    """Another source's masks cached on disk: computed once per image content and settings.

    The key is the SHA-256 of the image (shape, dtype, pixels: :func:`image_digest`) and of the
    wrapped source's :meth:`~MaskSource.settings` (JSON, sorted keys). Files:
    ``cache_dir/<settings hash[:16]>/settings.json`` (what the folder holds) and
    ``.../<image hash[:2]>/<image hash>.npz`` holding the masks bit-packed, their shape and both
    hashes (checked on reading). Writes are atomic (:func:`ovdense.utils.io.atomic_write`), so
    concurrent processes and interrupted runs never leave a partial file; the masks read back
    are exactly those computed (same order, same bits).

    Args:
        source: the source to cache (any :class:`MaskSource`).
        cache_dir: the cache folder (created when needed).

    Attributes:
        hits, misses: reads served from the cache / computed, since construction.
    """

    def __init__(self, source: MaskSource, cache_dir: str | os.PathLike) -> None:
        if not isinstance(source, MaskSource):
            raise TypeError(f"source must be a MaskSource, got {type(source).__name__}.")
        self.source = source
        self.cache_dir = Path(cache_dir).expanduser()
        self.hits = 0
        self.misses = 0
        self._settings_key: str | None = None

    def settings(self) -> dict[str, Any]:
        return self.source.settings()

    @property
    def settings_key(self) -> str:
        """SHA-256 of the wrapped source's settings (hex)."""
        if self._settings_key is None:
            text = json.dumps(self.settings(), sort_keys=True, default=str)
            self._settings_key = hashlib.sha256(text.encode()).hexdigest()
        return self._settings_key

    def path_for(self, image: np.ndarray) -> Path:
        """The cache file of an image's masks."""
        digest = image_digest(check_rgb_image(image))
        return self.cache_dir / self.settings_key[:16] / digest[:2] / f"{digest}.npz"

    def generate(self, image: np.ndarray) -> Tensor:
        digest = image_digest(image)
        folder = self.cache_dir / self.settings_key[:16]
        path = folder / digest[:2] / f"{digest}.npz"
        cached = self._read(path, digest, image.shape[:2])
        if cached is not None:
            self.hits += 1
            return cached
        masks = self.source(image)
        self.misses += 1
        self._write(folder, path, digest, masks)
        return masks

    def _read(self, path: Path, digest: str, size: tuple[int, ...]) -> Tensor | None:
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as f:
            if str(f["image_sha256"]) != digest or str(f["settings_sha256"]) != self.settings_key:
                return None
            n, h, w = (int(v) for v in f["shape"])
            if (h, w) != tuple(size):
                return None
            bits = np.unpackbits(f["packed"], axis=1, count=h * w) if n else np.zeros((0, h * w))
        return torch.from_numpy(bits.astype(bool).reshape(n, h, w))

    def _write(self, folder: Path, path: Path, digest: str, masks: Tensor) -> None:
        settings_file = folder / "settings.json"
        if not settings_file.is_file():
            text = json.dumps(self.settings(), sort_keys=True, indent=1, default=str)
            atomic_write_text(settings_file, text + "\n")
        n, h, w = masks.shape
        packed = np.packbits(masks.numpy().reshape(n, h * w), axis=1)
        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                packed=packed,
                shape=np.array([n, h, w], dtype=np.int64),
                image_sha256=np.array(digest),
                settings_sha256=np.array(self.settings_key),
            )

    def __repr__(self) -> str:
        return f"CachedMaskSource({type(self.source).__name__}, cache_dir={str(self.cache_dir)!r})"


def build_mask_source(
    name: str, cache_dir: str | os.PathLike | None = None, **kwargs: Any
) -> MaskSource:
    """A registered mask source by name (``kwargs`` to its constructor), cached on disk under
    ``cache_dir`` when given (:class:`CachedMaskSource`).

    Example::

        source = build_mask_source("sam", kind="vit_h", checkpoint="sam_vit_h_4b8939.pth",
                                   cache_dir="~/.cache/ovdense/masks")
        masks = source(load_image("kitchen.jpg"))        # [N, H, W] bool
    """
    source = MASK_SOURCES.get(name)(**kwargs)
    return source if cache_dir is None else CachedMaskSource(source, cache_dir)
