"""Speed and memory of ovdense's text and image sides, as ratios measured in one run.

Sections (for a ViT-B/16-sized open_clip model, random weights unless --pretrained or
--checkpoint is given):

* ``text``: first-time encoding of a vocabulary (default VOC21's 46 names x 80 templates;
  several ``--classnames`` files give one table each) by three exact paths — the naive
  per-class encoding padded to the 77-token context, batched prompts trimmed to the longest
  one, and template prefixes shared (each template's common start encoded once) — their
  largest differences, and the cached re-run;
* ``image``, per strategy, precision and short side: seconds per image, images/s, peak memory,
  achieved GFLOP/s next to a ``torch.matmul`` GEMM rate measured in the same run, and the ratio
  of the measured time to the FLOP bound (windows x FLOPs per window / GEMM rate). The
  methods with parts of their own (random weights, ``--method-parts``), marked ``*``:
  ``corrclip`` (DINO ViT-B/8 query+key; its masks a fixed 4 x 4 grid, ``GridMaskSource``,
  with a random SAM ViT-B's automatic masks timed apart), ``trident`` (DINO ViT-B/16 proxy
  attention over all windows, SAM ViT-B affinity aggregation; its SAM refinement is timed in
  the breakdown only) and ``sam3`` (only with the ``sam3`` package: tiny, or ``--sam3-size
  full``); their FLOPs are those of a whole ``encode_image``. For ResCLIP, SC-CLIP and these,
  a second table says where the time of one prediction (``encode_image`` + ``decode``) goes:
  self seconds of the CLIP tower, the method's last block, the VFM, the SAM encoder, the
  aggregation, the mask generation, SAM 3's backbone and grounding, decoding, refinement,
  and the rest (resize, windows, stitching);
* ``memory``: peak memory (resident set, sampled every 0.5 ms, above the state before each
  step) of the demo's steps on one ``--demo-image-size`` image — ``set_image``, the labels-only
  ``predict`` for each ``--demo-classes`` count, the overlay, the label PNG — as MB per
  megapixel (= bytes per image pixel);
* ``onnx``: ONNX Runtime (CPU) against eager torch on one image, the first strategy exported
  with ``--onnx-classes`` names baked in (time per image, logit and cosine differences, label
  agreement);
* ``int8``: ``precision="int8"`` (dynamic int8 linear layers) against fp32 on the CPU, the
  first strategy: seconds per image, the largest difference of the dense features, label
  agreement;
* ``catseg`` (only with ``--catseg``): CAT-Seg's trained head (random weights: speed and memory
  do not depend on them) at the official evaluation geometry (the image resized to 640 x 640,
  four 384-pixel windows 256 apart plus the whole image; ``--catseg-geometry``) for each
  ``--catseg-classes`` vocabulary size: the backbone's and the head's seconds per image, their
  FLOPs against the GEMM rate, images/s, and peak memory (CPU: resident set above the state
  before the step; GPU: peak allocated). The head runs ``class_chunk`` classes at a time and,
  above 256 classes, only the 256 of highest CLIP cost per window (as the official code), so
  its cost flattens above 256;
* ``video`` (only with ``--video-fps``): frames/s of the demo's video path.

By default ``text`` and ``image`` run; ``--all`` runs text, image, memory, onnx and int8 in one
go; ``--text-only``, ``--demo-memory``, ``--onnx``, ``--int8``, ``--catseg`` and
``--video-fps`` run that section alone. On a GPU (``--device cuda``) the image section
defaults to fp16 and bf16 at short sides 336 and 448 (batched windows,
``--window-batch-size``), and ``--all`` leaves out the CPU-only sections (memory, onnx, int8).

Example::

    ovdense benchmark --all --threads 2      # CPU, everything, all strategies
    ovdense benchmark --device cuda --all --window-batch-size 32
    ovdense benchmark --device cuda --precision fp16 --short-side 336 448 --strategies naclip
    ovdense benchmark --demo-memory --demo-image-size 3000 4000 --demo-classes 5 200 847
    ovdense benchmark --catseg --catseg-classes 150 847

(``python tools/benchmark.py ...`` runs the same code.)
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ..data import CLASSNAMES_DIR
from ..modeling.backbones import (
    AttentionStrategy,
    ProxyAttention,
    build_strategy,
    build_vfm,
    list_strategies,
)
from ..modeling.clip import load_clip
from ..modeling.refiners import CLIPDINOiserHead, build_aggregator
from ..modeling.segmentors import (
    CLIPDINOiserSegmentor,
    TrainingFreeSegmentor,
    build_catseg_segmentor,
    rescale_size,
    sliding_windows,
)
from ..modeling.text import TextEncoder, Vocabulary
from ..utils.cli import add_device_argument, add_model_source_arguments, resolve_device, run_cli
from ..utils.io import atomic_write_text


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(
    fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1
) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_rate(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an ``n x n @ n x n`` matmul (best of ``repeats``)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = _best_time(lambda: torch.matmul(a, b), device, repeats, warmup=2)
    return 2 * n**3 / t


def _sdpa_flops(
    query: Sequence[int],
    key: Sequence[int],
    value: Sequence[int],
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """FLOPs of softmax(q kᵀ) v from the input shapes (q kᵀ and A v: 2 matmuls)."""
    b, h, lq, d = query
    return 2 * b * h * lq * key[-2] * (d + value[-1])


# NOTE: torch's FlopCounterMode has no formula for the CPU flash-attention kernel; without this
# the attention matmuls would be missing from the FLOP bound.
_EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # Linux reports KiB; a process-wide high-water mark on CPU.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_text(
    clip: Any,
    vocab: Vocabulary,
    device: torch.device,
    cache_dir: Path | None,
    repeats: int = 1,
    naive: bool = True,
) -> dict:
    """First-time text encoding of ``vocab`` x 80 templates by three exact paths: one class at a
    time padded to the 77-token context (``naive``, skipped when ``False``), today's batched
    prompts cut to their longest one (``trimmed``), and the template prefixes shared
    (``prefix``); the trimmed and prefix runs alternate ``repeats`` times (best time kept),
    then the cached re-run."""
    names = vocab.names

    def encoder(share: bool) -> TextEncoder:
        return TextEncoder(
            clip,
            templates="openai_imagenet",
            cache_dir=cache_dir,
            progress=False,
            share_prefix=share,
        )

    trimmed_enc, prefix_enc = encoder(False), encoder(True)
    t_count = len(trimmed_enc.templates)

    @torch.no_grad()
    def per_class_padded() -> torch.Tensor:
        out = []
        for name in names:
            tok = trimmed_enc.tokenizer([t.format(name) for t in trimmed_enc.templates])
            e = F.normalize(clip.encode_text(tok.to(device)).float(), dim=-1)
            out.append(F.normalize(e.mean(0), dim=-1))
        return torch.stack(out)

    def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        return time.perf_counter() - t0, out

    result: dict[str, Any] = {"names": len(names), "prompts": len(names) * t_count}
    t_trim = t_prefix = float("inf")
    for _ in range(max(1, repeats)):
        dt, trimmed = timed(lambda: trimmed_enc.encode_names(names, use_cache=False))
        t_trim = min(t_trim, dt)
        dt, shared = timed(lambda: prefix_enc.encode_names(names, use_cache=False))
        t_prefix = min(t_prefix, dt)
    result.update(
        trimmed_s=t_trim,
        prefix_s=t_prefix,
        prefix_shared=prefix_enc.shares_prefix,
        prefix_speedup=t_trim / t_prefix,
        prefix_max_abs_diff=float((shared - trimmed).abs().max()),
    )
    if naive:
        t_naive, ref = timed(per_class_padded)
        result.update(
            naive_padded_s=t_naive,
            speedup=t_naive / t_prefix,
            max_abs_diff=float((shared - ref).abs().max()),
        )
    TextEncoder.clear_memory_cache()
    prefix_enc.encode_names(names)  # fill the cache
    t_cached, again = timed(lambda: encoder(True).encode_names(names))
    result.update(cached_s=t_cached, cached_equal=bool(torch.equal(again.cpu(), shared.cpu())))
    return result


def make_strategy(name: str, args: argparse.Namespace) -> str | AttentionStrategy:
    """Strategies holding another model get it with random weights unless --pretrained;
    ``--strategy-kwargs`` gives a strategy other constructor arguments."""
    kwargs = _strategy_kwargs(name, args)
    if name == "proxy":
        vfm = build_vfm(args.vfm, pretrained=bool(args.pretrained))
        return ProxyAttention(vfm=vfm, **kwargs)
    if name == "corrclip":
        return build_strategy(
            "corrclip", vfm=_method_vfm("dino_vitb8", "query_key", args), **kwargs
        )
    return build_strategy(name, **kwargs) if kwargs else name


def _strategy_kwargs(name: str, args: argparse.Namespace) -> dict[str, Any]:
    given = json.loads(getattr(args, "strategy_kwargs", None) or "{}")
    return dict(given.get(name, {}))


#: The vocabulary of strategies that need one to encode an image (ResCLIP's semantic feedback):
#: as many names as VOC21.
_VOCABULARY = [f"class {i}" for i in range(21)]

#: The methods the image section builds with their own parts (besides the strategy names), and
#: what their row is made of.
METHODS = {
    "corrclip": "DINO ViT-B/8 query+key; synthetic masks (4x4 grid), SAM masks timed apart",
    "trident": "proxy + DINO ViT-B/16, SAM ViT-B encoder aggregation; SAM refinement: stages",
    "sam3": "SAM 3 image backbone (grounding per phrase in stages only)",
}

#: The training-free methods whose rows get a breakdown of their time (:func:`bench_stages`).
NEW_METHODS = ("resclip", "scclip", "corrclip", "trident", "sam3")

#: ``--method-parts tiny``: the random DINO / SAM / SAM 3 sizes of the tests (a smoke run with
#: ``--model ovdense-tiny-vit``); ``full``: the sizes the methods use.
_TINY_VIT: dict[str, Any] = {"img_size": 32, "embed_dim": 24, "depth": 2, "num_heads": 2}
_TINY_SAM_ENCODER = {
    "img_size": 64,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "global_attn_indexes": (1,),
    "window_size": 4,
}
#: CorrCLIP's mask generator settings (its presets): 8 points per side, thresholds 0.4.
_CORRCLIP_MASK_OPTIONS = {
    "points_per_side": 8,
    "pred_iou_thresh": 0.4,
    "stability_score_thresh": 0.4,
}


def _tiny_parts(args: argparse.Namespace) -> bool:
    return getattr(args, "method_parts", "full") == "tiny"


def _method_vfm(name: str, feature: str, args: argparse.Namespace) -> Any:
    """A random-weight (unless --pretrained) DINO of ``name`` giving ``feature``."""
    extra = _TINY_VIT if _tiny_parts(args) else {}
    return build_vfm(name, pretrained=bool(args.pretrained), feature=feature, **extra)


def _random_sam(args: argparse.Namespace) -> Any:
    """A random SAM ViT-B (a tiny one with ``--method-parts tiny``)."""
    from ..sam import build_sam, tiny_sam

    return tiny_sam(0, img_size=64) if _tiny_parts(args) else build_sam("vit_b", pretrained=False)


def sam3_available() -> str | None:
    """``None`` when the optional ``sam3`` package imports, else why not (one line)."""
    try:
        from ..sam.sam3 import require_sam3

        require_sam3()
    except ImportError as err:
        return " ".join(str(err).split())
    return None


def make_segmentor(clip: Any, name: str, args: argparse.Namespace, **kwargs: Any) -> Any:
    """A strategy name, ``clip_dinoiser`` (MaskCLIP + affinity pooling, random heads), or a method
    of :data:`METHODS` with random parts: ``corrclip`` (its mask source a fixed 4 x 4 grid,
    :class:`~ovdense.sam.GridMaskSource`, and the region vote), ``trident`` (ProxyCLIP attention
    from DINO ViT-B/16 over all windows, SAM ViT-B affinity aggregation, SAM refinement) and
    ``sam3`` (:class:`~ovdense.sam.SAM3Segmentor`, full size with ``--sam3-size full``)."""
    if name == "clip_dinoiser":
        head = CLIPDINOiserHead(width=clip.visual.transformer.width)
        return CLIPDINOiserSegmentor(clip, head=head, **kwargs)
    if name == "corrclip":
        from ..sam import GridMaskSource

        return TrainingFreeSegmentor(
            clip,
            strategy=make_strategy(name, args),
            mask_source=GridMaskSource(4, 4),
            label_refiner="region_vote",
            **kwargs,
        )
    if name == "trident":
        from ..sam.refine import SAMRefiner

        tiny = _tiny_parts(args)
        strategy = ProxyAttention(
            vfm=_method_vfm("dino_vitb16", "tokens", args),
            **{"beta": 1.2, "gamma": 3.0, "mean_over": "batch", **_strategy_kwargs(name, args)},
        )
        aggregator = build_aggregator(
            "sam_affinity",
            sam="vit_b",
            pretrained=False,
            sam_kwargs=_TINY_SAM_ENCODER if tiny else None,
            cos_fac=1.2,
        )
        refiner = SAMRefiner(sam=_random_sam(args), coarse_thresh=0.2, minimal_area=225)
        return TrainingFreeSegmentor(
            clip, strategy=strategy, aggregator=aggregator, post_refiner=refiner, **kwargs
        )
    if name == "sam3":
        from ..sam.sam3 import SAM3Segmentor, build_sam3, tiny_sam3

        full = getattr(args, "sam3_size", "tiny") == "full" and not _tiny_parts(args)
        model = build_sam3(pretrained=False) if full else tiny_sam3(0)
        # SAM 3 runs fp32 or bf16 (autocast): any half precision asked for is bf16
        half = kwargs.get("precision", "fp32") != "fp32"
        return SAM3Segmentor(model, precision="bf16" if half else "fp32")
    return TrainingFreeSegmentor(clip, strategy=make_strategy(name, args), **kwargs)


def _image_and_text(
    seg: Any, args: argparse.Namespace, device: torch.device
) -> tuple[torch.Tensor, Any, Any]:
    """The random ``--image-size`` image ``[1, 3, H, W]``, the vocabulary's embeddings for
    decoding (``_VOCABULARY``) and those ``encode_image`` needs (``None`` unless the strategy
    reads the vocabulary, ResCLIP)."""
    h, w = args.image_size
    image = torch.rand(1, 3, h, w, device=device)
    text = seg.encode_text(_VOCABULARY)
    needs = getattr(seg, "_strategy_needs_text", None)
    return image, text, text if needs is not None and needs() else None


def bench_image(
    clip: Any,
    strategy: str,
    args: argparse.Namespace,
    device: torch.device,
    rate: float,
    precision: str | None = None,
    short_side: int | None = None,
) -> dict:
    """One strategy (or method of :data:`METHODS`) at one precision and short side (default:
    the first of ``--precision`` and ``--short-side``): ``encode_image`` of one image, the
    vocabulary encoded beforehand. The FLOPs are those of one window times the windows for a
    strategy, of one whole ``encode_image`` call for a method (its VFM, SAM encoder and mask
    source included)."""
    precision = precision or args.precision
    short_side = short_side or args.short_side
    seg = make_segmentor(
        clip,
        strategy,
        args,
        templates="single",
        short_side=short_side,
        window=args.window,
        stride=args.stride,
        window_batch_size=args.window_batch_size,
        precision=precision,
    ).to(device)
    image, _, text = _image_and_text(seg, args, device)
    extra = _EXTRA_FLOP_FORMULAS if device.type == "cpu" else {}
    if strategy in METHODS:
        windows = seg._resize_and_window(image)[2] if hasattr(seg, "_resize_and_window") else [None]
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=extra) as counter:
            seg.encode_image(image, text)
        total_flops = counter.get_total_flops()
    else:
        h, w = args.image_size
        hr, wr = rescale_size(h, w, short_side)
        windows = sliding_windows(hr, wr, args.window, args.stride)
        crop = windows[0]
        one = torch.randn(1, 3, crop[1] - crop[0], crop[3] - crop[2], device=device)
        # a strategy whose features depend on the vocabulary (ResCLIP) gets a 21-class one
        extras = seg._text_extras(text)
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=extra) as counter:
            seg.backbone(one) if extras is None else seg.backbone(one, extras)
        total_flops = counter.get_total_flops() * len(windows)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = _best_time(lambda: seg.encode_image(image, text), device, args.repeats)
    bound = total_flops / rate
    result = {
        "strategy": strategy,
        "precision": precision,
        "short_side": short_side,
        "windows": len(windows),
        "s_per_image": t,
        "images_per_s": 1.0 / t,
        "gflops_per_window": total_flops / len(windows) / 1e9,
        "achieved_gflops": total_flops / t / 1e9,
        "flop_bound_s": bound,
        "time_over_bound": t / bound,
        "peak_mem_mb": peak_memory_mb(device),
    }
    if strategy in METHODS:
        result["parts"] = _parts_note(strategy, args)
    if strategy in NEW_METHODS:
        result["stages"] = bench_stages(seg, strategy, args, device)
    return result


def _parts_note(name: str, args: argparse.Namespace) -> str:
    """What a method's row is made of (synthetic masks, tiny models)."""
    note = METHODS[name]
    if name == "sam3":
        full = getattr(args, "sam3_size", "tiny") == "full" and not _tiny_parts(args)
        note = ("full-size" if full else "tiny (tiny_sam3)") + " random " + note
    elif _tiny_parts(args):
        note = "tiny random DINO/SAM; " + note
    return note


class StageClock:
    """Self time per stage (seconds): a stage's time excludes the stages it calls, so the
    stages of one run sum to its wall time. Stages are entered by wrapping callables
    (:meth:`wrap`) or explicitly (:meth:`stage`); time outside every stage goes to ``root``.
    On CUDA the device is synchronised at every boundary."""

    def __init__(self, device: torch.device, root: str = "other") -> None:
        self.device = device
        self.times: dict[str, float] = {}
        self._stack: list[list[Any]] = []
        self._wrapped: list[tuple[Any, str, bool, Any]] = []
        self.root = root

    def _now(self) -> float:
        _sync(self.device)
        return time.perf_counter()

    def enter(self, name: str) -> None:
        t = self._now()
        if self._stack:
            top = self._stack[-1]
            self.times[top[0]] = self.times.get(top[0], 0.0) + t - top[1]
        self._stack.append([name, t])

    def leave(self) -> None:
        t = self._now()
        name, since = self._stack.pop()
        self.times[name] = self.times.get(name, 0.0) + t - since
        if self._stack:
            self._stack[-1][1] = t

    def stage(self, name: str, fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        """``fn(*a, **kw)`` timed as stage ``name``."""
        self.enter(name)
        try:
            return fn(*a, **kw)
        finally:
            self.leave()

    def wrap(self, obj: Any, attr: str, name: str) -> None:
        """Time every call of ``obj.attr`` (a module's ``forward``, a method, a callable
        attribute) as stage ``name`` until :meth:`unwrap_all`."""
        if obj is None:
            return
        had = attr in vars(obj)
        original = getattr(obj, attr)
        object.__setattr__(obj, attr, partial(self.stage, name, original))
        self._wrapped.append((obj, attr, had, original))

    def unwrap_all(self) -> None:
        for obj, attr, had, original in reversed(self._wrapped):
            if had:
                object.__setattr__(obj, attr, original)
            else:
                object.__delattr__(obj, attr)
        self._wrapped.clear()

    def run(self, fn: Callable[[], Any]) -> tuple[float, dict[str, float]]:
        """``(wall seconds, {stage: self seconds})`` of one call of ``fn``."""
        self.times = {}
        t0 = self._now()
        self.stage(self.root, fn)
        return time.perf_counter() - t0, dict(self.times)


#: Stage names of the breakdown table, in its column order.
STAGES = (
    "CLIP tower",
    "last block (method)",
    "VFM (DINO)",
    "SAM encoder",
    "aggregation",
    "mask generation",
    "SAM 3 backbone",
    "SAM 3 grounding",
    "decode",
    "refinement",
    "other",
)


def _wrap_stages(clock: StageClock, seg: Any) -> None:
    """Put ``clock`` around the stages of ``seg`` (see :data:`STAGES`)."""
    if hasattr(seg, "sam3"):  # SAM3Segmentor
        clock.wrap(seg, "encode_image", "SAM 3 backbone")
        clock.wrap(seg, "class_scores", "SAM 3 grounding")
        clock.wrap(seg, "decode", "decode")
        return
    bb = seg.backbone
    clock.wrap(bb, "forward", "CLIP tower")
    clock.wrap(bb, "forward_tokens", "CLIP tower")
    strategy = getattr(bb, "strategy", None)
    if strategy is not None:
        clock.wrap(strategy, "forward", "last block (method)")
        clock.wrap(getattr(strategy, "vfm", None), "forward", "VFM (DINO)")
    if seg.aggregator is not None:
        clock.wrap(seg.aggregator, "forward", "aggregation")
        clock.wrap(seg.aggregator.sam, "last_attention", "SAM encoder")
    if seg.mask_source is not None:
        clock.wrap(seg, "mask_source", "mask generation")
    clock.wrap(seg, "decode", "decode")
    clock.wrap(seg.label_refiner, "forward", "decode")
    clock.wrap(seg.post_refiner, "forward", "refinement")


def bench_stages(seg: Any, name: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Where the time of one prediction goes: ``encode_image`` then ``decode`` of one
    ``--image-size`` image (the vocabulary encoded beforehand, not timed), once, with a
    :class:`StageClock` around the stages of :data:`STAGES`. For ``corrclip`` also the random
    SAM ViT-B automatic mask generator with CorrCLIP's settings on the same image, timed
    apart (``sam_masks_s``: not in the total; the row uses synthetic masks).

    Returns:
        ``{"total_s", "stages": {stage: seconds}}`` (the stages sum to the total up to the
        clock's own overhead), plus ``sam_masks_s`` for ``corrclip``.
    """
    image, text, image_text = _image_and_text(seg, args, device)
    clock = StageClock(device)
    _wrap_stages(clock, seg)
    try:
        with torch.no_grad():
            seg.decode(seg.encode_image(image, image_text), text)  # warm-up, paths cached
            total, stages = clock.run(lambda: seg.decode(seg.encode_image(image, image_text), text))
    finally:
        clock.unwrap_all()
    out: dict[str, Any] = {"total_s": total, "stages": stages}
    if name == "corrclip":
        from ..sam import SamMaskSource

        source = SamMaskSource(sam=_random_sam(args).to(device), options=_CORRCLIP_MASK_OPTIONS)
        rgb = (image[0].permute(1, 2, 0).cpu().numpy() * 255).astype("uint8")
        out["sam_masks_s"] = _best_time(lambda: source(rgb), device, 1, warmup=0)
        out["sam_masks"] = ("tiny " if _tiny_parts(args) else "") + "SAM ViT-B"
    return out


class _PeakRSS:
    """Peak resident memory (bytes) above the level at entry, sampled by a thread."""

    def __enter__(self) -> _PeakRSS:
        import ctypes
        import os
        import threading

        try:  # return freed heap to the system first, so the baseline is honest
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.base = self.peak = self._rss()
        self._stop = False

        def sample() -> None:
            while not self._stop:
                self.peak = max(self.peak, self._rss())
                time.sleep(0.0005)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.delta = self.peak - self.base


def _demo_segmentor(
    clip: Any, args: argparse.Namespace, device: torch.device, precision: str = "fp32"
) -> Any:
    """The segmentor the demo, ONNX and int8 measurements run: the first of ``--strategies``
    (naclip when it is not a strategy), the first ``--short-side``, the window settings of the
    command line, one template."""
    return TrainingFreeSegmentor(
        clip,
        strategy=_first_strategy(args),
        templates="single",
        short_side=args.short_side,
        window=args.window,
        stride=args.stride,
        window_batch_size=args.window_batch_size,
        precision=precision,
    ).to(device)


def _first_strategy(args: argparse.Namespace) -> str:
    return args.strategies[0] if args.strategies[0] in list_strategies() else "naclip"


def bench_demo_memory(clip: Any, args: argparse.Namespace, device: torch.device) -> dict:
    """Peak memory of the demo's steps on one ``--demo-image-size`` image (bytes / pixel)."""
    import numpy as np

    from ..predictor import Predictor
    from ..utils.labels import save_label_png
    from ..utils.visualizer import overlay

    h, w = args.demo_image_size
    seg = _demo_segmentor(clip, args, device)
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    predictor = Predictor(seg)
    out: dict = {"image": [h, w], "bytes_per_pixel": {}}
    with _PeakRSS() as m:
        predictor.set_image(image)
    out["bytes_per_pixel"]["set_image"] = m.delta / (h * w)
    pred = None
    out["predict_s"] = {}
    for n in args.demo_classes:
        classes = [f"class {i}" for i in range(n)]
        seg.encode_text(classes)  # text side cached, not part of the image memory
        with _PeakRSS() as m:
            start = time.perf_counter()
            pred = predictor.predict(classes, return_probs=False)
            out["predict_s"][n] = time.perf_counter() - start
        out["bytes_per_pixel"][f"predict_{n}_classes"] = m.delta / (h * w)
    assert pred is not None
    with _PeakRSS() as m:
        vis = overlay(predictor.image, pred.labels, pred.classes)
    out["bytes_per_pixel"]["overlay"] = m.delta / (h * w)
    del vis
    with tempfile.TemporaryDirectory() as folder, _PeakRSS() as m:
        save_label_png(pred.labels, Path(folder) / "labels.png")
    out["bytes_per_pixel"]["save_label_png"] = m.delta / (h * w)
    return out


def bench_catseg(
    clip: Any, args: argparse.Namespace, device: torch.device, rate: float
) -> list[dict]:
    """CAT-Seg's head (random weights) at the official evaluation geometry: per vocabulary size
    of ``--catseg-classes``, the backbone's and the head's (decode, labels only) seconds per
    image, their FLOPs (one window counted, times the windows) against the GEMM ``rate``, and
    the peak memory of the whole prediction. The text side is encoded beforehand."""
    size, window, stride = args.catseg_geometry
    seg = build_catseg_segmentor(
        clip,
        fixed_size=size,
        window=window,
        stride=stride,
        global_view=True,
        decode_order="sigmoid",
        precision=args.precision,
    )
    seg = seg.to(device).eval()
    h, w = args.image_size
    image = torch.rand(1, 3, h, w, device=device)
    windows = len(sliding_windows(size, size, window, stride)) + 1  # + the whole image
    extra = _EXTRA_FLOP_FORMULAS if device.type == "cpu" else {}
    rows = []
    for n in args.catseg_classes:
        text = seg.encode_text([f"class {i}" for i in range(n)])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.no_grad(), _PeakRSS() as mem:
            backbone_s = _best_time(partial(seg.encode_image, image, text), device, args.repeats)
            feats = seg.encode_image(image, text)
            head_s = _best_time(
                partial(seg.decode, feats, text, return_probs=False), device, args.repeats
            )
        peak_mb = peak_memory_mb(device) if device.type == "cuda" else mem.delta / 2**20
        one = seg.window or 224
        crop = torch.rand(1, 3, one, one, device=device)
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=extra) as count:
            dense, _, inter = seg._forward_crops(crop, None)
        backbone_flops = count.get_total_flops() * windows
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=extra) as count:
            seg.head_scores(
                dense,
                seg._head_embeds(text, dense.device),
                [inter[f"block{i}"] for i in seg.head_layers],
            )
        head_flops = count.get_total_flops() * windows
        rows.append(
            {
                "classes": n,
                "windows": windows,
                "backbone_s": backbone_s,
                "head_s": head_s,
                "images_per_s": 1.0 / (backbone_s + head_s),
                "backbone_gflops": backbone_flops / 1e9,
                "head_gflops": head_flops / 1e9,
                "head_time_over_bound": head_s / (head_flops / rate),
                "peak_mem_mb": peak_mb,
            }
        )
    return rows


def bench_onnx(clip: Any, args: argparse.Namespace, device: torch.device) -> dict:
    """ONNX Runtime (CPU) vs eager torch for one ``--image-size`` image: the first of
    ``--strategies`` with its vocabulary baked in (``--onnx-classes`` names, one template),
    exported by :func:`ovdense.modeling.onnx_export.export_segmentor_onnx`; best of
    ``--repeats`` seconds per image, the largest logit difference and the label agreement."""
    from ..modeling.onnx_export import export_segmentor_onnx, run_onnx

    seg = _demo_segmentor(clip, args, device)
    classes = [f"class {i}" for i in range(args.onnx_classes)]
    size = (args.image_size[0], args.image_size[1])
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path, model = export_segmentor_onnx(seg, classes, size, Path(folder) / "seg.onnx")
        export_s = time.perf_counter() - start
        image = model.example_input()
        out, session = run_onnx(path, {"images": image}, threads=torch.get_num_threads())
        feeds = {"images": image.numpy()}
        text = seg.encode_text(classes)

        def eager() -> torch.Tensor:
            with torch.no_grad():
                return seg.decode(seg.encode_image(image), text).labels

        def ort() -> torch.Tensor:
            return torch.from_numpy(session.run(None, feeds)[1])

        labels = eager()
        t_eager = _best_time(eager, device, args.repeats)
        t_ort = _best_time(ort, device, args.repeats)
        with torch.no_grad():
            logits = seg.name_logits(seg.encode_image(image), text) * seg.logit_scale
    max_logit_diff = float(abs(out["logits"] - logits.numpy()).max())
    return {
        "strategy": _first_strategy(args),
        "classes": args.onnx_classes,
        "export_s": export_s,
        "eager_s": t_eager,
        "onnxruntime_s": t_ort,
        "speedup": t_eager / t_ort,
        "max_logit_diff": max_logit_diff,
        "logit_scale": seg.logit_scale,
        "max_cosine_diff": max_logit_diff / seg.logit_scale,
        "label_agreement": float((out["labels"] == labels.numpy()).mean()),
    }


def bench_int8(clip: Any, args: argparse.Namespace, device: torch.device) -> dict:
    """``precision="int8"`` against fp32 on the CPU for one ``--image-size`` image, the first
    of ``--strategies``: best of ``--repeats`` alternated runs, seconds per image of
    ``encode_image`` (the int8 copy of the backbone made before timing), the largest
    difference of the dense features (unit vectors), and the agreement of the labels decoded
    over ``--onnx-classes`` names."""
    from ..modeling.quantization import quantized_linear_count

    if device.type != "cpu":
        raise ValueError("The int8 section runs on the CPU only (use --device cpu).")
    fp32 = _demo_segmentor(clip, args, device)
    int8 = _demo_segmentor(clip, args, device, precision="int8")
    classes = [f"class {i}" for i in range(args.onnx_classes)]
    text = fp32.encode_text(classes)
    image = torch.rand(1, 3, *args.image_size, device=device)
    start = time.perf_counter()
    quantized = int8.image_backbone()
    quantize_s = time.perf_counter() - start
    cache = int8._int8_cache
    assert cache is not None
    n_int8, n_float = quantized_linear_count(quantized)
    # alternated, best of each: a shared machine's load shifts between runs
    t32 = t8 = float("inf")
    for _ in range(max(1, args.repeats)):
        t32 = min(t32, _best_time(lambda: fp32.encode_image(image, text), device, 1))
        t8 = min(t8, _best_time(lambda: int8.encode_image(image, text), device, 1))
    with torch.no_grad():
        f32, f8 = fp32.encode_image(image, text), int8.encode_image(image, text)
        l32, l8 = fp32.decode(f32, text).labels, int8.decode(f8, text).labels
    return {
        "strategy": _first_strategy(args),
        "backend": cache[2],
        "int8_linear_layers": n_int8,
        "float_linear_layers": n_float,
        "quantize_s": quantize_s,
        "fp32_s": t32,
        "int8_s": t8,
        "speedup": t32 / t8,
        "max_feature_diff": float((f32.dense - f8.dense).abs().max()),
        "label_agreement": float((l32 == l8).float().mean()),
        "classes": args.onnx_classes,
    }


def bench_video_fps(clip: Any, args: argparse.Namespace, device: torch.device) -> dict:
    """Frames per second of the demo's video path on ``--video-frames`` synthetic frames of
    ``--video-size``: frame by frame (``set_image`` + labels-only ``predict``, what
    ``ovdense demo --input clip.mp4`` does) and all frames through ``predict_batch``."""
    import numpy as np

    from ..predictor import Predictor

    h, w = args.video_size
    n = args.video_frames
    seg = _demo_segmentor(clip, args, device)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    classes = ["person", "car", "road", "sky", "tree"]
    seg.encode_text(classes)  # embedded once per run, as in the demo
    predictor = Predictor(seg)

    def per_frame() -> None:
        for frame in frames:
            predictor.set_image(frame)
            predictor.predict(classes, return_probs=False)

    def batched() -> None:
        predictor.predict_batch(frames, classes, return_probs=False)

    t_frame = _best_time(per_frame, device, args.repeats)
    t_batch = _best_time(batched, device, args.repeats)
    return {
        "frame_size": [h, w],
        "frames": n,
        "per_frame_fps": n / t_frame,
        "batched_fps": n / t_batch,
    }


#: Every section, in the order they print; ``--all`` runs :data:`ALL_SECTIONS`.
SECTIONS = ("text", "image", "memory", "onnx", "int8", "catseg", "video")
ALL_SECTIONS = ("text", "image", "memory", "onnx", "int8")
#: Sections measured on the CPU whatever the device (left out of ``--all`` on a GPU).
CPU_SECTIONS = ("memory", "onnx", "int8")
#: Image-section defaults on a GPU.
GPU_PRECISIONS = ("fp16", "bf16")
GPU_SHORT_SIDES = (336, 448)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_source_arguments(
        p,
        model_default="ViT-B-16",
        model_help="open_clip architecture (default: %(default)s)",
        pretrained_help="weight tag (default: random weights)",
        checkpoint_help="local open_clip checkpoint of --model (default: random weights)",
    )
    add_device_argument(p)
    p.add_argument(
        "--precision",
        nargs="+",
        default=None,
        choices=["fp32", "fp16", "bf16"],
        help="image-section precisions (default: fp32 on the CPU, fp16 bf16 on a GPU)",
    )
    p.add_argument(
        "--strategies",
        nargs="+",
        default=[*list_strategies(), "clip_dinoiser", "trident", "sam3"],
        help="strategy names, clip_dinoiser, and the methods with their own parts: corrclip "
        "(synthetic grid masks), trident, sam3 (needs the sam3 package)",
    )
    p.add_argument(
        "--strategy-kwargs",
        default=None,
        metavar="JSON",
        help='constructor arguments per strategy, e.g. \'{"resclip": {"rcs_layers": [3]}}\'',
    )
    p.add_argument(
        "--method-parts",
        choices=["full", "tiny"],
        default="full",
        help="sizes of the random DINO / SAM / SAM 3 of corrclip, trident and sam3: full (the "
        "methods') or tiny (the tests'; with --model ovdense-tiny-vit, a smoke run)",
    )
    p.add_argument(
        "--sam3-size",
        choices=["tiny", "full"],
        default="tiny",
        help="sam3's random model: tiny (tiny_sam3) or full (the official sizes, slow)",
    )
    p.add_argument("--vfm", default="dino_vitb8", help="vision foundation model of 'proxy'")
    p.add_argument(
        "--classnames",
        nargs="+",
        default=[str(CLASSNAMES_DIR / "cls_voc21.txt")],
        help="class-name files for the text benchmark (one table each), e.g. "
        "cls_voc21.txt cls_ade20k.txt cls_ade20k847.txt from ovdense/data/classnames",
    )
    p.add_argument("--text-repeats", type=int, default=1, help="alternating runs of the text paths")
    p.add_argument(
        "--skip-naive-text", action="store_true", help="skip the slow per-class padded path"
    )
    p.add_argument("--image-size", type=int, nargs=2, default=(375, 500), metavar=("H", "W"))
    p.add_argument(
        "--short-side",
        type=int,
        nargs="+",
        default=None,
        help="image-section short sides (default: 336 on the CPU, 336 448 on a GPU); the "
        "other sections use the first",
    )
    p.add_argument("--window", type=int, default=224)
    p.add_argument("--stride", type=int, default=112)
    p.add_argument("--window-batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--text-cache-dir", default=None)
    p.add_argument("--skip-text", action="store_true")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--all", action="store_true", help="text, image, memory, onnx and int8")
    p.add_argument("--text-only", action="store_true", help="measure the text side only")
    p.add_argument("--demo-memory", action="store_true", help="measure the demo's memory only")
    p.add_argument("--demo-image-size", type=int, nargs=2, default=(2000, 3000), metavar="N")
    p.add_argument("--demo-classes", type=int, nargs="+", default=[5, 200])
    p.add_argument("--onnx", action="store_true", help="measure ONNX Runtime vs eager torch only")
    p.add_argument("--onnx-classes", type=int, default=21, help="vocabulary of --onnx / --int8")
    p.add_argument("--int8", action="store_true", help="measure int8 vs fp32 (CPU) only")
    p.add_argument(
        "--catseg", action="store_true", help="measure CAT-Seg's trained head only (random weights)"
    )
    p.add_argument("--catseg-classes", type=int, nargs="+", default=[150, 847])
    p.add_argument(
        "--catseg-geometry",
        type=int,
        nargs=3,
        default=(640, 384, 256),
        metavar=("SIZE", "WINDOW", "STRIDE"),
        help="square input size, window and stride of --catseg (default: the official "
        "%(default)s; the whole image is one more window)",
    )
    p.add_argument("--video-fps", action="store_true", help="measure video frames/s only")
    p.add_argument("--video-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    p.add_argument("--video-frames", type=int, default=16)
    return p


def plan(args: argparse.Namespace, device_type: str) -> tuple[list[str], list[str]]:
    """Resolve the defaults that depend on the device and pick the sections.

    Sets ``args.precisions`` / ``args.short_sides`` (the image section's lists) and
    ``args.precision`` / ``args.short_side`` (their first values, used by the other sections).

    Returns:
        ``(sections to run, sections left out with the reason printed)``.

    Raises:
        ValueError: A setting the device cannot run (fp16 on the CPU, a CPU-only section alone
            on a GPU, two "only" flags at once).
    """
    gpu = device_type == "cuda"
    args.precisions = list(args.precision or (GPU_PRECISIONS if gpu else ("fp32",)))
    args.short_sides = list(args.short_side or (GPU_SHORT_SIDES if gpu else (336,)))
    args.precision, args.short_side = args.precisions[0], args.short_sides[0]
    if "fp16" in args.precisions and not gpu:
        raise ValueError("--precision fp16 needs a CUDA device; use fp32 or bf16 on the CPU.")
    only = {
        "text": args.text_only,
        "memory": args.demo_memory,
        "onnx": args.onnx,
        "int8": args.int8,
        "catseg": args.catseg,
        "video": args.video_fps,
    }
    chosen = [name for name, on in only.items() if on]
    if len(chosen) > 1 or (chosen and args.all):
        flags = ", ".join(chosen + (["all"] if args.all else []))
        raise ValueError(f"Choose one of --all and the section flags (given: {flags}).")
    if chosen:
        sections = chosen
        if gpu and sections[0] in CPU_SECTIONS:
            raise ValueError(
                f"The {sections[0]} section measures the CPU (ONNX Runtime's CPU provider, "
                "int8 kernels, resident memory): run it with --device cpu."
            )
        return sections, []
    sections = list(ALL_SECTIONS if args.all else ("text", "image"))
    if args.skip_text:
        sections.remove("text")
    skipped = [s for s in sections if gpu and s in CPU_SECTIONS]
    return [s for s in sections if s not in skipped], skipped


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(resolve_device(args.device))
    sections, skipped = plan(args, device.type)
    torch.manual_seed(0)
    if args.pretrained or args.checkpoint:
        clip = load_clip(args.model, args.pretrained, checkpoint=args.checkpoint, device=device)
    else:
        import open_clip

        clip = open_clip.create_model(args.model, pretrained=None).to(device).eval()
        clip = load_clip(model=clip, model_name=args.model)
    print(
        f"# ovdense benchmark: {args.model} "
        f"({args.checkpoint or args.pretrained or 'random weights'}) on {device}, "
        f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}"
    )
    if skipped:
        print(f"(left out on {device.type}, CPU measurements: {', '.join(skipped)})")
    results: dict = {"config": vars(args), "sections": sections}
    for section in sections:
        _RUNNERS[section](clip, args, device, results)
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2))
    return 0


def _run_text(clip: Any, args: argparse.Namespace, device: torch.device, results: dict) -> None:
    results["text"] = []
    for file in args.classnames:
        synonym_sep = "; " if "voc21" in file or "object" in file else ", "
        vocab = Vocabulary.from_file(file, synonym_sep=synonym_sep)
        tr = bench_text(
            clip,
            vocab,
            device,
            Path(args.text_cache_dir) if args.text_cache_dir else None,
            repeats=args.text_repeats,
            naive=not args.skip_naive_text,
        )
        tr["classnames"] = Path(file).name
        results["text"].append(tr)
        print(
            f"\n## Text: {Path(file).name}, {tr['names']} names x 80 templates = "
            f"{tr['prompts']} prompts"
        )
        if "naive_padded_s" in tr:
            print(f"naive (per class, padded to 77): {tr['naive_padded_s']:.3f} s")
        print(f"batched, trimmed to the longest prompt: {tr['trimmed_s']:.3f} s")
        print(
            f"template prefixes shared: {tr['prefix_s']:.3f} s -> "
            f"{tr['prefix_speedup']:.2f}x the trimmed path"
            + (f", {tr['speedup']:.2f}x the naive one" if "speedup" in tr else "")
            + f"; max |diff| = {tr['prefix_max_abs_diff']:.2e}"
            + (f" (vs naive {tr['max_abs_diff']:.2e})" if "max_abs_diff" in tr else "")
            + ("" if tr["prefix_shared"] else " [tower not causal: fell back]")
        )
        print(f"cached re-run: {tr['cached_s'] * 1e3:.2f} ms (equal: {tr['cached_equal']})")


_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _run_image(clip: Any, args: argparse.Namespace, device: torch.device, results: dict) -> None:
    results["image"] = []
    results["gemm_gflops"] = {}
    print(
        f"\n## Image side: {args.image_size[0]}x{args.image_size[1]} input, window "
        f"{args.window} / stride {args.stride}, {args.window_batch_size} windows per batch"
    )
    rates = {}
    for prec in args.precisions:
        rates[prec] = gemm_rate(device, _DTYPES[prec])
        results["gemm_gflops"][prec] = rates[prec] / 1e9
        print(f"torch.matmul GEMM rate, {prec}: {rates[prec] / 1e9:.1f} GFLOP/s")
    header = (
        "strategy",
        "precision",
        "short side",
        "windows",
        "s/image",
        "images/s",
        "GFLOP/s",
        "x FLOP bound",
        "peak MB",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    strategies = list(args.strategies)
    if "sam3" in strategies and (why := sam3_available()) is not None:
        strategies.remove("sam3")
        print(f"(sam3 skipped: {why})")
    for prec in args.precisions:
        for side in args.short_sides:
            for strategy in strategies:
                r = bench_image(clip, strategy, args, device, rates[prec], prec, side)
                results["image"].append(r)
                mark = "*" if strategy in METHODS else ""
                print(
                    f"| {strategy}{mark} | {prec} | {side} | {r['windows']} | "
                    f"{r['s_per_image']:.3f} | {r['images_per_s']:.2f} | "
                    f"{r['achieved_gflops']:.1f} | {r['time_over_bound']:.3f} | "
                    f"{r['peak_mem_mb']:.0f} |"
                )
    _print_stages(results["image"])
    plain = [r for r in results["image"] if r["strategy"] not in METHODS]
    if plain and args.window_batch_size > 1:
        one = argparse.Namespace(**{**vars(args), "window_batch_size": 1})
        first = plain[0]
        r1 = bench_image(
            clip, first["strategy"], one, device, rates[first["precision"]], first["precision"],
            first["short_side"],
        )  # fmt: skip
        batched = first["s_per_image"]
        results["unbatched"] = {**r1, "batching_speedup": r1["s_per_image"] / batched}
        print(
            f"\n{first['strategy']} ({first['precision']}, short side {first['short_side']}) "
            f"with one window per backbone call: {r1['s_per_image']:.3f} s/image; batching "
            f"{args.window_batch_size} windows is {r1['s_per_image'] / batched:.2f}x faster"
        )


def _print_stages(rows: list[dict]) -> None:
    """The rows of the methods (``*``): what they are made of, and where their time goes."""
    rows = [r for r in rows if "stages" in r]
    if not rows:
        return
    print()
    for r in rows:
        if "parts" in r:
            print(f"* {r['strategy']}: {r['parts']}")
    used = [s for s in STAGES if any(s in r["stages"]["stages"] for r in rows)]
    print(
        "\n## Where the time goes: one prediction (encode_image + decode, the vocabulary "
        f"of {len(_VOCABULARY)} names encoded beforehand), self seconds per stage"
    )
    header = ("method", "precision", "short side", *used, "sum", "total")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        st = r["stages"]
        cells = [f"{st['stages'].get(s, 0.0):.3f}" if s in st["stages"] else "-" for s in used]
        print(
            f"| {r['strategy']} | {r['precision']} | {r['short_side']} | "
            + " | ".join(cells)
            + f" | {sum(st['stages'].values()):.3f} | {st['total_s']:.3f} |"
        )
    for r in rows:
        if "sam_masks_s" in r["stages"]:
            print(
                f"{r['strategy']}: {r['stages']['sam_masks']} automatic masks (random weights, "
                "8 x 8 points, CorrCLIP's thresholds) on the same image, timed apart (not in "
                f"the rows, which use the synthetic grid): {r['stages']['sam_masks_s']:.3f} s"
            )


def _run_memory(clip: Any, args: argparse.Namespace, device: torch.device, results: dict) -> None:
    dm = bench_demo_memory(clip, args, device)
    results["demo_memory"] = dm
    mp = dm["image"][0] * dm["image"][1] / 1e6
    print(
        f"\n## Demo memory, {dm['image'][0]}x{dm['image'][1]} image ({mp:.1f} megapixels): "
        "peak RSS above the state before each step"
    )
    print("| step | MB per megapixel (= bytes per pixel) | MB | seconds |")
    print("|---|---|---|---|")
    for step, value in dm["bytes_per_pixel"].items():
        n = step.split("_")[1] if step.startswith("predict_") else None
        secs = f"{dm['predict_s'][int(n)]:.1f}" if n is not None else ""
        print(f"| {step} | {value:.1f} | {value * mp:.0f} | {secs} |")


def _run_onnx(clip: Any, args: argparse.Namespace, device: torch.device, results: dict) -> None:
    ox = bench_onnx(clip, args, device)
    results["onnx"] = ox
    print(
        f"\n## ONNX Runtime vs eager torch: {ox['strategy']}, {args.image_size[0]}x"
        f"{args.image_size[1]} image, {ox['classes']} classes baked in, short side "
        f"{args.short_side}, window {args.window} / stride {args.stride}"
    )
    print(f"export: {ox['export_s']:.1f} s")
    print(
        f"eager: {ox['eager_s']:.3f} s/image; ONNX Runtime: {ox['onnxruntime_s']:.3f} s/image "
        f"-> {ox['speedup']:.2f}x; max |logit diff| {ox['max_logit_diff']:.1e} (logit scale "
        f"{ox['logit_scale']:g}: {ox['max_cosine_diff']:.1e} on the cosines), labels equal on "
        f"{100 * ox['label_agreement']:.3f}% of pixels"
    )


def _run_int8(clip: Any, args: argparse.Namespace, device: torch.device, results: dict) -> None:
    r = bench_int8(clip, args, device)
    results["int8"] = r
    print(
        f"\n## int8 vs fp32 (CPU): {r['strategy']}, {args.image_size[0]}x{args.image_size[1]} "
        f"image, short side {args.short_side}, window {args.window} / stride {args.stride}; "
        f"backend {r['backend']}, {r['int8_linear_layers']} linear layers in int8 "
        f"({r['float_linear_layers']} stay float), quantized in {r['quantize_s']:.1f} s"
    )
    print(
        f"fp32: {r['fp32_s']:.3f} s/image; int8: {r['int8_s']:.3f} s/image -> "
        f"{r['speedup']:.2f}x; max |dense feature diff| {r['max_feature_diff']:.1e}; labels "
        f"({r['classes']} classes) equal on {100 * r['label_agreement']:.2f}% of pixels"
    )


def _run_catseg(clip: Any, args: argparse.Namespace, device: torch.device, results: dict) -> None:
    rate = gemm_rate(device, _DTYPES[args.precision])
    cs = bench_catseg(clip, args, device, rate)
    results["gemm_gflops"] = rate / 1e9
    results["catseg"] = cs
    print(
        f"\n## CAT-Seg head: {args.image_size[0]}x{args.image_size[1]} input resized to "
        f"{args.catseg_geometry[0]} x {args.catseg_geometry[0]}, "
        f"{args.catseg_geometry[1]}-pixel windows / stride {args.catseg_geometry[2]} + the "
        f"whole image ({cs[0]['windows']} views), {args.precision}; "
        f"torch.matmul GEMM rate {rate / 1e9:.1f} GFLOP/s"
    )
    header = (
        "classes",
        "backbone s/image",
        "head s/image",
        "images/s",
        "backbone GFLOP",
        "head GFLOP",
        "head x FLOP bound",
        "peak MB",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in cs:
        print(
            f"| {r['classes']} | {r['backbone_s']:.3f} | {r['head_s']:.3f} | "
            f"{r['images_per_s']:.3f} | {r['backbone_gflops']:.0f} | {r['head_gflops']:.0f} | "
            f"{r['head_time_over_bound']:.2f} | {r['peak_mem_mb']:.0f} |"
        )


def _run_video(clip: Any, args: argparse.Namespace, device: torch.device, results: dict) -> None:
    vf = bench_video_fps(clip, args, device)
    results["video_fps"] = vf
    print(
        f"\n## Video, {vf['frames']} frames of {vf['frame_size'][0]}x{vf['frame_size'][1]}: "
        f"{vf['per_frame_fps']:.2f} frames/s frame by frame, "
        f"{vf['batched_fps']:.2f} frames/s through predict_batch"
    )


_RUNNERS: dict[str, Callable[[Any, argparse.Namespace, torch.device, dict], None]] = {
    "text": _run_text,
    "image": _run_image,
    "memory": _run_memory,
    "onnx": _run_onnx,
    "int8": _run_int8,
    "catseg": _run_catseg,
    "video": _run_video,
}


if __name__ == "__main__":
    sys.exit(run_cli(main))
