"""SAM 3 (Meta, 2025) as a semantic segmentor and as a mask source.

SAM 3 finds *every* instance of a noun phrase ("promptable concept segmentation"): for a phrase
it returns up to ``Q`` instance masks, each with a score. :class:`SAM3Segmentor` turns these into
ovdense's per-class score maps, so ovdense's decoding rules (synonyms, background, thresholds,
windows) and its evaluation runner apply to SAM 3 unchanged. :class:`SAM3MaskSource` gives the
class-agnostic masks SAM 3 finds for a list of phrases.

The model is the official ``sam3`` package's ``Sam3Image`` (optional extra:
``pip install "ovdense[sam3]"``), built by :func:`build_sam3` with the official sizes and read
from a checkpoint file the user gives (``sam3.pt``, gated on the Hugging Face hub; the SAM
Licence applies to the weights), or with random weights and small sizes by :func:`tiny_sam3`
for tests. Three things of ``sam3`` 0.1.4 are worked around here, each without changing a
result: its wheel does not ship the BPE vocabulary (open_clip's file, byte-identical, is used),
its builder puts caches on CUDA (:func:`build_sam3` builds on any device), and its box-pooling
branch calls ``pin_memory`` (CUDA only) even for text prompts, which carry no box
(:func:`text_prompts_only`).

**Score of a class** (``score="instances"``, the default). For phrase ``n`` SAM 3's decoder
gives per query ``q`` a logit ``l[n, q]``, a mask logit map ``m[n, q]`` (1/4 of its input
resolution) and a presence logit ``p[n]`` (is the concept in the image at all). As
``Sam3Processor`` does, the instance score is ``s[n, q] = sigmoid(l[n, q]) * sigmoid(p[n])``
and an instance is kept when ``s[n, q] > instance_thd``; its mask probability at a pixel ``x``
of the input is ``sigmoid(up(m[n, q]))(x)`` (``up``: bilinear resize of the logits to the input
size, ``align_corners=False``). The score of class ``c`` with names ``N(c)`` is::

    S[c](x) = max over n in N(c), kept q of  s[n, q] * sigmoid(up(m[n, q]))(x)    (0 if none)

``score="semantic"`` uses SAM 3's semantic head instead: ``S[c](x) = max over n in N(c) of
sigmoid(p[n]) * sigmoid(up(sem[n]))(x)``, with ``sem[n]`` its one-channel semantic logit map.
Scores lie in ``[0, 1]`` and are not normalised over classes.

**Labels** (:class:`~ovdense.modeling.segmentors.base.LabelRules`, as for every ovdense
segmentor): argmax over classes, SCLIP's ``area_thd`` and the ``prob_thd`` background threshold.
The background class (``background_index``, else the class named like background) is not
prompted unless ``prompt_background``: its score is 0, and a pixel no prompted class scores
above 0 is background. Without a background class such a pixel gets the first class.

**Windows**: ``window`` / ``stride`` (input pixels) cut the image into crops, each seen by
SAM 3 at its full resolution; crop score maps are averaged where crops overlap
(:func:`~ovdense.modeling.segmentors.base.stitch_windows`). ``window=None``: the whole image.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..modeling.segmentors.base import (
    LabelRules,
    SegmentationOutput,
    check_unit_images,
    sliding_windows,
    stitch_windows,
)
from ..utils.validation import check_fraction, check_int
from ..utils.weights import CheckpointFormatError, read_state_dict
from ..vocabulary import Vocabulary
from .mask_source import MASK_SOURCES, MaskSource

__all__ = [
    "SAM3_SCORES",
    "SAM3MaskSource",
    "SAM3Segmentor",
    "SAM3Sizes",
    "SAM3Text",
    "SAM3ImageFeatures",
    "build_sam3",
    "instance_score_maps",
    "missing_sam3_checkpoint_message",
    "require_sam3",
    "semantic_score_maps",
    "text_prompts_only",
    "tiny_sam3",
]

#: Values of ``score``: see the module docstring.
SAM3_SCORES = ("instances", "semantic")
#: Where the official weights are published (gated: accept the SAM Licence there).
SAM3_WEIGHTS_PAGE = "https://huggingface.co/facebook/sam3"
#: Mean and std of SAM 3's input normalisation (``Sam3Processor``).
SAM3_MEAN = (0.5, 0.5, 0.5)
SAM3_STD = (0.5, 0.5, 0.5)


def require_sam3() -> None:
    """Raise an ``ImportError`` naming the install command when ``sam3`` is missing."""
    try:
        import sam3  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"SAM 3 needs the official sam3 package ({err}): pip install 'ovdense[sam3]' "
            "(see README.md#sam-3 for an install that keeps your numpy and torch)."
        ) from None


def missing_sam3_checkpoint_message(flag: str = "model.checkpoint=") -> str:
    """One sentence: where to get SAM 3's weights and how to pass them."""
    return (
        f"SAM 3 needs its checkpoint file: accept the SAM Licence at {SAM3_WEIGHTS_PAGE}, "
        f"download sam3.pt and pass {flag}{'' if flag.endswith('=') else ' '}/path/sam3.pt."
    )


@dataclass(frozen=True)
class SAM3Sizes:
    """The sizes of a SAM 3 image model; the defaults are the official ones
    (``sam3.model_builder.build_sam3_image_model``).

    Attributes:
        resolution: the square input size (pixels); a multiple of ``patch_size``.
        patch_size: ViT patch size.
        vit_dim, vit_depth, vit_heads, vit_mlp_ratio: the image ViT.
        vit_window: window-attention size (patches) of the non-global blocks.
        vit_global_blocks: blocks with global attention.
        pretrain_img_size: the ViT's pretraining input size (its position embedding, tiled).
        d_model: width of the neck, the fusion encoder, the decoder and the heads.
        ffn_dim, num_heads: feed-forward width and heads of the encoder / decoder layers.
        encoder_layers, decoder_layers, geometry_layers: layer counts.
        num_queries: decoder queries (instances per phrase).
        text_width, text_heads, text_layers, context_length: the text transformer.
    """

    resolution: int = 1008
    patch_size: int = 14
    vit_dim: int = 1024
    vit_depth: int = 32
    vit_heads: int = 16
    vit_mlp_ratio: float = 4.625
    vit_window: int = 24
    vit_global_blocks: tuple[int, ...] = (7, 15, 23, 31)
    pretrain_img_size: int = 336
    d_model: int = 256
    ffn_dim: int = 2048
    num_heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    geometry_layers: int = 3
    num_queries: int = 200
    text_width: int = 1024
    text_heads: int = 16
    text_layers: int = 24
    context_length: int = 32


#: Small sizes for tests and offline runs (random weights only): about 1.8 M parameters.
TINY_SIZES = SAM3Sizes(
    resolution=56,
    patch_size=14,
    vit_dim=32,
    vit_depth=2,
    vit_heads=2,
    vit_mlp_ratio=2.0,
    vit_window=2,
    vit_global_blocks=(1,),
    pretrain_img_size=28,
    d_model=32,
    ffn_dim=64,
    num_heads=4,
    encoder_layers=1,
    decoder_layers=1,
    geometry_layers=1,
    num_queries=8,
    text_width=32,
    text_heads=2,
    text_layers=1,
)


def _bpe_path() -> str:
    """CLIP's BPE vocabulary: SAM 3's tokenizer file (``sam3/assets/bpe_simple_vocab_16e6.txt.gz``
    in its repository, missing from its 0.1.4 wheel) is byte-identical to open_clip's copy."""
    import open_clip

    return str(Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz")


def _build_image_model(sizes: SAM3Sizes, bpe_path: str | None) -> nn.Module:
    """``Sam3Image`` composed as the official builder composes it (its layer types and flags),
    with ``sizes``; position-encoding and box-coordinate caches are made on first use, on the
    model's device."""
    require_sam3()
    from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer
    from sam3.model.encoder import TransformerEncoderFusion, TransformerEncoderLayer
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
    from sam3.model.model_misc import MLP, DotProductScoring, TransformerWrapper
    from sam3.model.model_misc import MultiheadAttentionWrapper as MHA
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam3_image import Sam3Image
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.tokenizer_ve import SimpleTokenizer
    from sam3.model.vitdet import ViT

    s = sizes
    if s.resolution % s.patch_size:
        raise ValueError(
            f"resolution {s.resolution} is not a multiple of patch_size {s.patch_size}."
        )
    d = s.d_model

    def position_encoding() -> nn.Module:
        return PositionEmbeddingSine(num_pos_feats=d, normalize=True, scale=None, temperature=10000)

    def attention(batch_first: bool, dropout: float = 0.1) -> nn.Module:
        return MHA(num_heads=s.num_heads, dropout=dropout, embed_dim=d, batch_first=batch_first)

    vit = ViT(
        img_size=s.resolution,
        pretrain_img_size=s.pretrain_img_size,
        patch_size=s.patch_size,
        embed_dim=s.vit_dim,
        depth=s.vit_depth,
        num_heads=s.vit_heads,
        mlp_ratio=s.vit_mlp_ratio,
        norm_layer="LayerNorm",
        drop_path_rate=0.1,
        qkv_bias=True,
        use_abs_pos=True,
        tile_abs_pos=True,
        global_att_blocks=tuple(s.vit_global_blocks),
        rel_pos_blocks=(),
        use_rope=True,
        use_interp_rope=True,
        window_size=s.vit_window,
        pretrain_use_cls_token=True,
        retain_cls_token=False,
        ln_pre=True,
        ln_post=False,
        return_interm_layers=False,
        bias_patch_embed=False,
    )
    neck = Sam3DualViTDetNeck(
        position_encoding=position_encoding(),
        d_model=d,
        scale_factors=[4.0, 2.0, 1.0, 0.5],
        trunk=vit,
        add_sam2_neck=False,
    )
    text = VETextEncoder(
        tokenizer=SimpleTokenizer(bpe_path=bpe_path or _bpe_path()),
        d_model=d,
        width=s.text_width,
        heads=s.text_heads,
        layers=s.text_layers,
        context_length=s.context_length,
    )
    from sam3.model.vl_combiner import SAM3VLBackbone

    backbone = SAM3VLBackbone(visual=neck, text=text, scalp=1)
    encoder = TransformerEncoderFusion(
        layer=TransformerEncoderLayer(
            activation="relu",
            d_model=d,
            dim_feedforward=s.ffn_dim,
            dropout=0.1,
            pos_enc_at_attn=True,
            pos_enc_at_cross_attn_keys=False,
            pos_enc_at_cross_attn_queries=False,
            pre_norm=True,
            self_attention=attention(True),
            cross_attention=attention(True),
        ),
        num_layers=s.encoder_layers,
        d_model=d,
        num_feature_levels=1,
        frozen=False,
        use_act_checkpoint=True,
        add_pooled_text_to_img_feat=False,
        pool_text_with_mask=True,
    )
    decoder = TransformerDecoder(
        layer=TransformerDecoderLayer(
            activation="relu",
            d_model=d,
            dim_feedforward=s.ffn_dim,
            dropout=0.1,
            cross_attention=MHA(num_heads=s.num_heads, dropout=0.1, embed_dim=d),
            n_heads=s.num_heads,
            use_text_cross_attention=True,
        ),
        num_layers=s.decoder_layers,
        num_queries=s.num_queries,
        return_intermediate=True,
        box_refine=True,
        num_o2m_queries=0,
        dac=True,
        boxRPB="log",
        d_model=d,
        frozen=False,
        interaction_layer=None,
        dac_use_selfatt_ln=True,
        resolution=None,  # the official 1008 // 14 precomputes coordinates on CUDA
        stride=None,
        use_act_checkpoint=True,
        presence_token=True,
    )
    scoring = DotProductScoring(
        d_model=d,
        d_proj=d,
        prompt_mlp=MLP(
            input_dim=d,
            hidden_dim=s.ffn_dim,
            output_dim=d,
            num_layers=2,
            dropout=0.1,
            residual=True,
            out_norm=nn.LayerNorm(d),
        ),
    )
    segmentation_head = UniversalSegmentationHead(
        hidden_dim=d,
        upsampling_stages=3,
        aux_masks=False,
        presence_head=False,
        dot_product_scorer=None,
        act_ckpt=True,
        cross_attend_prompt=attention(False, dropout=0.0),
        pixel_decoder=PixelDecoder(
            num_upsampling_stages=3, interpolation_mode="nearest", hidden_dim=d
        ),
    )
    geometry = SequenceGeometryEncoder(
        pos_enc=position_encoding(),
        encode_boxes_as_points=False,
        points_direct_project=True,
        points_pool=True,
        points_pos_enc=True,
        boxes_direct_project=True,
        boxes_pool=True,
        boxes_pos_enc=True,
        d_model=d,
        num_layers=s.geometry_layers,
        layer=TransformerEncoderLayer(
            activation="relu",
            d_model=d,
            dim_feedforward=s.ffn_dim,
            dropout=0.1,
            pos_enc_at_attn=False,
            pre_norm=True,
            self_attention=attention(False),
            pos_enc_at_cross_attn_queries=False,
            pos_enc_at_cross_attn_keys=True,
            cross_attention=attention(False),
        ),
        use_act_ckpt=True,
        add_cls=True,
        add_post_encode_proj=True,
    )
    model = Sam3Image(
        backbone=backbone,
        transformer=TransformerWrapper(encoder=encoder, decoder=decoder, d_model=d),
        input_geometry_encoder=geometry,
        segmentation_head=segmentation_head,
        num_feature_levels=1,
        o2m_mask_predict=True,
        dot_prod_scoring=scoring,
        use_instance_query=False,
        multimask_output=True,
        inst_interactive_predictor=None,
        matcher=None,
    )
    # two text-encoder parameters are created with torch.empty (the official code always
    # loads them): give them CLIP's initialisation so random models are finite
    enc = model.backbone.language_backbone.encoder
    nn.init.normal_(enc.positional_embedding, std=0.01)
    if isinstance(enc.text_projection, nn.Parameter):
        nn.init.normal_(enc.text_projection, std=enc.width**-0.5)
    model.ovdense_resolution = s.resolution  # the input size SAM3Segmentor resizes to
    return model


def build_sam3(
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = True,
    *,
    sizes: SAM3Sizes | None = None,
    bpe_path: str | None = None,
) -> nn.Module:
    """SAM 3's image model (``sam3.model.sam3_image.Sam3Image``, no interactive SAM 1 task
    head), in eval mode on the CPU.

    Args:
        checkpoint: the official ``sam3.pt`` (read with ``weights_only=True``; the image
            model's ``detector.*`` entries are loaded, the video tracker's are not needed).
        pretrained: ``False`` without a checkpoint: random weights.
        sizes: :class:`SAM3Sizes` (default: the official sizes).
        bpe_path: the tokenizer's BPE file (default: open_clip's copy, identical to SAM 3's).

    Raises:
        ImportError: the ``sam3`` package is missing (names the install command).
        ValueError: ``pretrained`` without a ``checkpoint`` (says where to get it).
        FileNotFoundError, CheckpointFormatError: a missing or unreadable file, or one that
            holds no SAM 3 image-model weights.
        RuntimeError: weights of other shapes (a checkpoint of other sizes).
    """
    if checkpoint is None and pretrained:
        raise ValueError(missing_sam3_checkpoint_message())
    model = _build_image_model(sizes or SAM3Sizes(), bpe_path)
    if checkpoint is not None:
        load_sam3_checkpoint(model, checkpoint)
    return model.eval()


def load_sam3_checkpoint(model: nn.Module, checkpoint: str | os.PathLike) -> None:
    """Load the official ``sam3.pt`` (or a state dict of ``Sam3Image`` itself) into ``model``.

    Entries under ``detector.`` are the image model's (as ``sam3``'s own loader reads them);
    a file without that prefix is taken as the model's own state dict. Parameters the file
    lacks are named in a warning (the official loader prints them and goes on).

    Raises:
        CheckpointFormatError: not one of the model's parameters is in the file.
        RuntimeError: a parameter of another shape.
    """
    hint = f"expected SAM 3's sam3.pt ({SAM3_WEIGHTS_PAGE})"
    state = read_state_dict(checkpoint, what="SAM 3 checkpoint", hint=hint)
    if any(k.startswith("detector.") for k in state):
        state = {k[len("detector.") :]: v for k, v in state.items() if k.startswith("detector.")}
    own = model.state_dict()
    found = [k for k in own if k in state]
    if not found:
        raise CheckpointFormatError(
            f"SAM 3 checkpoint {checkpoint} holds none of the image model's weights (e.g. "
            f"{next(iter(own))}); {hint}."
        )
    try:
        missing, _ = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise RuntimeError(
            f"Could not load {checkpoint} into SAM 3 ({detail}); {hint}, for these sizes."
        ) from None
    if missing:
        warnings.warn(
            f"SAM 3 checkpoint {checkpoint} lacks {len(missing)} of the model's "
            f"{len(own)} entries ({', '.join(missing[:3])}...); they keep their initial values.",
            stacklevel=2,
        )


def tiny_sam3(seed: int = 0, sizes: SAM3Sizes | None = None) -> nn.Module:
    """A small randomly initialised SAM 3 image model (:data:`TINY_SIZES`: 56-pixel input,
    width 32, 8 queries) built from the official modules: for tests, not for real masks."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_sam3(pretrained=False, sizes=sizes or TINY_SIZES)


@contextmanager
def text_prompts_only(model: nn.Module) -> Iterator[None]:
    """Run ``model`` (a ``Sam3Image``) on text prompts without its box-pooling branch.

    ``sam3`` 0.1.4 pools box prompts with ``pin_memory()`` (CUDA only), also when a prompt has
    no box. With no box the pooled term is an empty tensor added to another, so leaving the
    branch out (for the duration of this block) changes no value; it lets SAM 3 run on CPU.
    """
    geometry: Any = model.geometry_encoder
    saved = geometry.boxes_pool_project
    geometry.boxes_pool_project = None
    try:
        yield
    finally:
        geometry.boxes_pool_project = saved


def preprocess(image: Tensor, resolution: int) -> Tensor:
    """``Sam3Processor``'s input transform of one ``[3, H, W]`` RGB image in ``[0, 1]`` (or
    ``uint8``): ``uint8`` (x 255), resized to ``resolution`` x ``resolution`` (torchvision's
    ``Resize``: bilinear, antialiased, on ``uint8``), back to ``[0, 1]``, normalised with mean
    and std 0.5. Returns ``[3, resolution, resolution]`` float32."""
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.ToDtype(torch.uint8, scale=True),
            v2.Resize(size=(resolution, resolution)),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(SAM3_MEAN), std=list(SAM3_STD)),
        ]
    )
    return transform(v2.functional.to_image(image))


def instance_score_maps(
    pred_logits: Tensor,
    presence_logits: Tensor,
    pred_masks: Tensor,
    size: tuple[int, int],
    instance_thd: float = 0.5,
    chunk: int = 32,
) -> Tensor:
    """Per phrase, the max over kept instances of ``score x mask probability`` (module
    docstring): ``S[n](x) = max_{q: s[n,q] > instance_thd} s[n,q] * sigmoid(up(m[n,q]))(x)``
    with ``s = sigmoid(pred_logits) * sigmoid(presence_logits)``; 0 where no instance is kept.

    Args:
        pred_logits: ``[P, Q]`` (or ``[P, Q, 1]``) instance logits.
        presence_logits: ``[P]`` (or ``[P, 1]``) presence logits.
        pred_masks: ``[P, Q, h, w]`` mask logits.
        size: ``(H, W)`` of the output.
        instance_thd: instances with a score at most this are dropped.
        chunk: instance masks upsampled per call.

    Returns:
        ``[P, H, W]`` float32 in ``[0, 1]``.
    """
    logits = pred_logits.float().reshape(pred_masks.shape[:2])
    presence = presence_logits.float().reshape(-1, 1)
    scores = logits.sigmoid() * presence.sigmoid()  # [P, Q]
    out = pred_masks.new_zeros((pred_masks.shape[0], *size), dtype=torch.float32)
    for p in range(pred_masks.shape[0]):
        keep = torch.nonzero(scores[p] > instance_thd).flatten()
        for start in range(0, keep.numel(), chunk):
            idx = keep[start : start + chunk]
            masks = F.interpolate(
                pred_masks[p, idx][None].float(), size=size, mode="bilinear", align_corners=False
            )[0].sigmoid_()
            best = masks.mul_(scores[p, idx, None, None]).amax(dim=0)
            torch.maximum(out[p], best, out=out[p])
    return out


def semantic_score_maps(
    presence_logits: Tensor, semantic_seg: Tensor, size: tuple[int, int]
) -> Tensor:
    """Per phrase, ``sigmoid(p[n]) * sigmoid(up(sem[n]))``: SAM 3's semantic head times its
    presence score (module docstring).

    Args:
        presence_logits: ``[P]`` (or ``[P, 1]``).
        semantic_seg: ``[P, 1, h, w]`` semantic logits.
        size: ``(H, W)`` of the output.

    Returns:
        ``[P, H, W]`` float32 in ``[0, 1]``.
    """
    up = F.interpolate(semantic_seg.float(), size=size, mode="bilinear", align_corners=False)
    return up[:, 0].sigmoid() * presence_logits.float().reshape(-1, 1, 1).sigmoid()


@dataclass
class SAM3Text:
    """A vocabulary encoded by SAM 3's text encoder (image-independent, reused for every image).

    Attributes:
        vocabulary: the classes.
        prompts: the phrases given to SAM 3 (every name, less the background class's unless
            it is prompted).
        prompt_class: ``[len(prompts)]`` int64, each phrase's class.
        outputs: SAM 3's text outputs for ``prompts``: ``language_features [L, P, D]``,
            ``language_mask [P, L]``, ``language_embeds [L, P, D]``.
        background: the background class left unprompted, or ``None``.
    """

    vocabulary: Vocabulary
    prompts: list[str]
    prompt_class: Tensor
    outputs: dict[str, Tensor]
    background: int | None = None

    @property
    def num_classes(self) -> int:
        return self.vocabulary.num_classes


@dataclass
class SAM3ImageFeatures:
    """SAM 3's image-side outputs (vocabulary-independent), as :class:`SAM3Segmentor`'s
    :meth:`~SAM3Segmentor.encode_image` returns them.

    Attributes:
        crops: per image, per window, SAM 3's backbone outputs (``backbone_fpn``,
            ``vision_pos_enc``, ... for a batch of one).
        windows: crop boxes ``(y1, y2, x1, x2)`` in the input image (all of one size).
        batch_size: ``B``.
        image_size: ``(H, W)`` of the input.
        images: ``[B, 3, H, W]`` input in ``[0, 1]``, kept for a ``post_refiner`` (else
            ``None``).
    """

    crops: list[list[dict[str, Any]]]
    windows: list[tuple[int, int, int, int]]
    batch_size: int
    image_size: tuple[int, int]
    images: Tensor | None = None


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


class SAM3Segmentor(LabelRules, nn.Module):
    """SAM 3 as an open-vocabulary semantic segmentor (formula and rules: module docstring).

    The same interface as :class:`~ovdense.modeling.segmentors.Segmentor`:
    :meth:`encode_text` (once per vocabulary), :meth:`encode_image` (once per image: SAM 3's
    image backbone), :meth:`decode` (the phrases, a batch of ``phrase_batch`` per SAM 3 call,
    on the cached image features), ``forward`` and :meth:`segment_batch`; so
    :class:`~ovdense.Predictor` and the evaluation runner take it as they take the CLIP
    segmentors.

    Args:
        sam3: a ``Sam3Image`` (:func:`build_sam3`, :func:`tiny_sam3`); default: built from
            ``checkpoint``.
        checkpoint: the official ``sam3.pt`` (the SAM Licence applies to it).
        score: ``"instances"`` (default) or ``"semantic"`` (module docstring).
        instance_thd: instances scoring at most this are dropped (``Sam3Processor``'s
            ``confidence_threshold``, 0.5 there).
        resolution: SAM 3's square input size (default: the one :func:`build_sam3` built the
            model for, else the official 1008).
        window, stride: crops of the input (pixels) seen one at a time (``None``: whole image).
        phrase_batch: phrases per SAM 3 call (each call repeats the image features per phrase).
        prompt_background: prompt SAM 3 with the background class's names too.
        prob_thd, area_thd, background_index: the label rules of
            :class:`~ovdense.modeling.segmentors.Segmentor` (on the scores ``S``).
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"auto"`` (bf16 on CUDA, fp32 on CPU).
        post_refiner: an optional ``post_refiner(images, scores) -> scores`` on the input-size
            class scores before the labels (e.g. :class:`~ovdense.sam.refine.SAMRefiner`).

    Raises:
        ValueError: no ``sam3`` and no ``checkpoint`` (the message says where to get it), or a
            bad option.
    """

    def __init__(
        self,
        sam3: nn.Module | None = None,
        checkpoint: str | os.PathLike | None = None,
        *,
        score: str = "instances",
        instance_thd: float = 0.5,
        resolution: int | None = None,
        window: int | None = None,
        stride: int | None = None,
        phrase_batch: int = 8,
        prompt_background: bool = False,
        prob_thd: float = 0.0,
        area_thd: float | None = None,
        background_index: int | None = None,
        precision: str = "fp32",
        post_refiner: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if score not in SAM3_SCORES:
            raise ValueError(f"score must be one of {SAM3_SCORES}, got {score!r}.")
        if precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}.")
        if sam3 is None:
            if checkpoint is None:
                raise ValueError(missing_sam3_checkpoint_message())
            sam3 = build_sam3(checkpoint)
        self.sam3: Any = sam3.eval()  # a Sam3Image (sam3 ships no type information)
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.score = score
        self.instance_thd = float(check_fraction("instance_thd", instance_thd))
        own = int(getattr(self.sam3, "ovdense_resolution", SAM3Sizes.resolution))
        self.resolution = own if resolution is None else check_int("resolution", resolution)
        self.window = check_int("window", window, allow_none=True)
        self.stride = check_int("stride", stride, allow_none=True)
        if self.window is not None and self.stride is not None and self.stride > self.window:
            raise ValueError(f"stride ({self.stride}) > window ({self.window}) would leave gaps.")
        self.phrase_batch = check_int("phrase_batch", phrase_batch, minimum=1)
        self.prompt_background = bool(prompt_background)
        self.prob_thd = float(check_fraction("prob_thd", prob_thd))
        self.area_thd = check_fraction("area_thd", area_thd, allow_none=True)
        self.background_index = check_int(
            "background_index", background_index, minimum=0, allow_none=True
        )
        self.precision = precision
        self.post_refiner = post_refiner
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.sam3.parameters()).device

    def _autocast(self) -> Any:
        dev = self.device.type
        if self.precision == "fp32" or (self.precision == "auto" and dev != "cuda"):
            return nullcontext()
        return torch.autocast(device_type=dev, dtype=torch.bfloat16)

    def _background(self, vocabulary: Vocabulary) -> int | None:
        """The background class (``background_index`` when it is a class, else the class
        named like background), or ``None``."""
        bg = self.background_index
        if bg is not None and bg < vocabulary.num_classes:
            return bg
        return vocabulary.background_index

    # -- text side ------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, vocabulary: Vocabulary | Sequence[str | Sequence[str]]) -> SAM3Text:
        """Encode every phrase of ``vocabulary`` with SAM 3's text encoder (a batch of
        ``phrase_batch`` at a time)."""
        vocab = Vocabulary.coerce(vocabulary)
        bg = None if self.prompt_background else self._background(vocab)
        prompts: list[str] = []
        classes: list[int] = []
        for c, names in enumerate(vocab):
            if c == bg:
                continue
            prompts.extend(names)
            classes.extend([c] * len(names))
        return SAM3Text(
            vocabulary=vocab,
            prompts=prompts,
            prompt_class=torch.tensor(classes, dtype=torch.long),
            outputs=self.encode_prompts(prompts),
            background=bg,
        )

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, Tensor]:
        """SAM 3's text outputs for ``prompts`` (``phrase_batch`` at a time):
        ``language_features [L, P, D]``, ``language_mask [P, L]``, ``language_embeds [L, P, D]``
        (empty dict for no prompt)."""
        dev = self.device
        parts: list[dict[str, Tensor]] = []
        with self._autocast():
            for s in range(0, len(prompts), self.phrase_batch):
                chunk = list(prompts[s : s + self.phrase_batch])
                parts.append(self.sam3.backbone.forward_text(chunk, device=dev))
        if not parts:
            return {}
        return {
            "language_features": torch.cat([p["language_features"] for p in parts], dim=1),
            "language_mask": torch.cat([p["language_mask"] for p in parts], dim=0),
            "language_embeds": torch.cat([p["language_embeds"] for p in parts], dim=1),
        }

    # -- image side -----------------------------------------------------------------------
    @torch.no_grad()
    def encode_image(self, images: Tensor, text: SAM3Text | None = None) -> SAM3ImageFeatures:
        """SAM 3's image backbone on each crop of each image (``[B, 3, H, W]`` RGB in
        ``[0, 1]`` or ``uint8``); ``text`` is not needed (accepted for the common interface)."""
        images = check_unit_images(images)
        b, _, h, w = images.shape
        windows = sliding_windows(h, w, self.window, self.stride)
        dev = self.device
        crops: list[list[dict[str, Any]]] = []
        with self._autocast():
            for i in range(b):
                per_image = []
                for y1, y2, x1, x2 in windows:
                    x = preprocess(images[i, :, y1:y2, x1:x2].cpu(), self.resolution)
                    per_image.append(self.sam3.backbone.forward_image(x[None].to(dev)))
                crops.append(per_image)
        return SAM3ImageFeatures(
            crops=crops,
            windows=windows,
            batch_size=b,
            image_size=(h, w),
            images=images if self.post_refiner is not None else None,
        )

    # -- decoding -------------------------------------------------------------------------
    def phrase_outputs(
        self, crop: dict[str, Any], text_outputs: dict[str, Tensor], start: int, stop: int
    ) -> dict[str, Any]:
        """SAM 3's grounding outputs for phrases ``start:stop`` of ``text_outputs``
        (:meth:`encode_prompts`) on one crop's
        backbone outputs, in one call (the crop's features repeated per phrase):
        ``pred_logits [P, Q, 1]``, ``presence_logit_dec [P, 1]``, ``pred_masks [P, Q, h, w]``,
        ``semantic_seg [P, 1, h, w]``."""
        from sam3.model.data_misc import FindStage

        dev = self.device
        n = stop - start
        find = FindStage(
            img_ids=torch.zeros(n, dtype=torch.long, device=dev),
            text_ids=torch.arange(start, stop, dtype=torch.long, device=dev),
            input_boxes=None,
            input_boxes_mask=None,
            input_boxes_label=None,
            input_points=None,
            input_points_mask=None,
        )
        backbone_out = {**crop, **_to_device(text_outputs, dev)}
        with self._autocast(), text_prompts_only(self.sam3):
            return self.sam3.forward_grounding(
                backbone_out=backbone_out,
                find_input=find,
                geometric_prompt=self.sam3._get_dummy_prompt(num_prompts=n),
                find_target=None,
            )

    @torch.no_grad()
    def crop_scores(self, crop: dict[str, Any], text: SAM3Text, size: tuple[int, int]) -> Tensor:
        """Class scores ``S`` of one crop (module docstring): ``[C, h, w]`` at ``size``."""
        c = text.num_classes
        out = torch.zeros((c, *size), dtype=torch.float32, device=self.device)
        for s in range(0, len(text.prompts), self.phrase_batch):
            stop = min(s + self.phrase_batch, len(text.prompts))
            o = self.phrase_outputs(crop, text.outputs, s, stop)
            if self.score == "instances":
                maps = instance_score_maps(
                    o["pred_logits"], o["presence_logit_dec"], o["pred_masks"], size,
                    self.instance_thd,
                )  # fmt: skip
            else:
                maps = semantic_score_maps(o["presence_logit_dec"], o["semantic_seg"], size)
            classes = text.prompt_class[s:stop].to(out.device)
            index = classes.view(-1, 1, 1).expand_as(maps)
            out.scatter_reduce_(0, index, maps, reduce="amax")  # running max over synonyms
        return out

    @torch.no_grad()
    def class_scores(self, feats: SAM3ImageFeatures, text: SAM3Text) -> Tensor:
        """``[B, C, H, W]`` class scores at the input size (crops stitched)."""
        y1, y2, x1, x2 = feats.windows[0]
        crop_size = (y2 - y1, x2 - x1)
        out = []
        for per_image in feats.crops:
            maps = torch.stack([self.crop_scores(cr, text, crop_size) for cr in per_image])
            out.append(stitch_windows(maps, feats.windows, 1, feats.image_size))
        return torch.cat(out, dim=0)

    @torch.no_grad()
    def decode(
        self,
        feats: SAM3ImageFeatures,
        text: SAM3Text,
        prob_thd: float | None = None,
        return_probs: bool = True,
    ) -> SegmentationOutput:
        """Labels (and the class scores ``S`` as ``probs``) of encoded images.

        Args:
            feats: :meth:`encode_image`'s result.
            text: :meth:`encode_text`'s result.
            prob_thd: overrides the segmentor's threshold for this call.
            return_probs: keep ``probs`` ``[B, C, H, W]`` (the scores ``S``) in the output.
        """
        scores = self.class_scores(feats, text)
        if self.post_refiner is not None:
            if feats.images is None:
                raise ValueError(
                    "post_refiner needs the input images, which these features do not carry "
                    "(encoded before it was set): encode the image again."
                )
            refined = self.post_refiner(feats.images.to(scores.device), scores)
            if not isinstance(refined, Tensor) or refined.shape != scores.shape:
                raise ValueError(
                    f"post_refiner {type(self.post_refiner).__name__} must return scores of "
                    f"shape {tuple(scores.shape)}."
                )
            scores = refined
        labels = self.assign_labels(scores, prob_thd, text.vocabulary)
        if text.background is not None:
            labels[scores.amax(dim=1) <= 0] = text.background
        return SegmentationOutput(
            labels=labels, probs=scores if return_probs else None, vocabulary=text.vocabulary
        )

    def forward(
        self, images: Tensor, vocabulary: Vocabulary | Sequence[str | Sequence[str]]
    ) -> SegmentationOutput:
        """Segment a batch of same-size images ``[B, 3, H, W]`` (RGB in ``[0, 1]``)."""
        text = self.encode_text(vocabulary)
        return self.decode(self.encode_image(images), text)

    @torch.no_grad()
    def segment_batch(
        self,
        images: Sequence[Tensor],
        vocabulary: Vocabulary | Sequence[str | Sequence[str]],
        prob_thd: float | None = None,
        return_probs: bool = True,
    ) -> list[SegmentationOutput]:
        """Segment images of different sizes (``[3, H, W]`` each), the text encoded once."""
        text = self.encode_text(vocabulary)
        out = []
        for image in images:
            x = image if image.ndim == 4 else image[None]
            out.append(self.decode(self.encode_image(x), text, prob_thd, return_probs))
        return out

    def extra_repr(self) -> str:
        return (
            f"score={self.score!r}, instance_thd={self.instance_thd}, "
            f"resolution={self.resolution}, window={self.window}, stride={self.stride}, "
            f"prob_thd={self.prob_thd}, prompt_background={self.prompt_background}"
        )


@MASK_SOURCES.register("sam3")
@dataclass
class SAM3MaskSource(MaskSource):
    """The instance masks SAM 3 finds for a list of phrases, as a mask source: called with one
    ``[H, W, 3]`` uint8 RGB image, returns ``[N, H, W]`` bool masks (CPU).

    Order: phrase by phrase as given, within a phrase by decreasing instance score. A mask is
    ``sigmoid(up(m)) > mask_thd`` of an instance scoring above ``instance_thd``
    (``Sam3Processor``'s masks); ``N = 0`` when none is found.

    Args:
        sam3: a ``Sam3Image``; default: built from ``checkpoint``.
        checkpoint: the official ``sam3.pt``.
        prompts: the phrases (e.g. a vocabulary's names, or generic ones such as ``"object"``).
        instance_thd, mask_thd: thresholds (0.5 and 0.5 in ``Sam3Processor``).
        resolution: SAM 3's input size (default: the model's).
        phrase_batch: phrases per SAM 3 call.
    """

    sam3: nn.Module | None = None
    checkpoint: str | os.PathLike | None = None
    prompts: Sequence[str] = ("object",)
    instance_thd: float = 0.5
    mask_thd: float = 0.5
    resolution: int | None = None
    phrase_batch: int = 8
    _segmentor: SAM3Segmentor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.prompts, str) or not self.prompts:
            raise ValueError(f"prompts must be a non-empty list of phrases, got {self.prompts!r}.")
        self.instance_thd = float(check_fraction("instance_thd", self.instance_thd))
        self.mask_thd = float(check_fraction("mask_thd", self.mask_thd))
        self._segmentor = SAM3Segmentor(
            self.sam3,
            self.checkpoint,
            instance_thd=self.instance_thd,
            resolution=self.resolution,
            phrase_batch=self.phrase_batch,
        )
        self.sam3 = self._segmentor.sam3

    def settings(self) -> dict[str, Any]:
        """Everything that changes the masks (JSON-able), less the weights of a model given
        without a checkpoint."""
        ckpt = None
        if self.checkpoint is not None:
            p = Path(self.checkpoint).expanduser()
            ckpt = {"file": p.name, "bytes": p.stat().st_size if p.is_file() else None}
        seg = self._segmentor
        assert seg is not None
        return {
            "source": "sam3",
            "checkpoint": ckpt,
            "prompts": list(self.prompts),
            "instance_thd": self.instance_thd,
            "mask_thd": self.mask_thd,
            "resolution": seg.resolution,
        }

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> Tensor:
        """The masks ``[N, H, W]`` (bool, CPU) of a checked ``[H, W, 3]`` uint8 RGB image."""
        seg = self._segmentor
        assert seg is not None
        h, w = image.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        feats = seg.encode_image(x)
        prompts = list(self.prompts)
        text = seg.encode_prompts(prompts)
        masks = []
        crop = feats.crops[0][0]
        for s in range(0, len(prompts), seg.phrase_batch):
            stop = min(s + seg.phrase_batch, len(prompts))
            o = seg.phrase_outputs(crop, text, s, stop)
            logits = o["pred_logits"].float().reshape(o["pred_masks"].shape[:2])
            scores = logits.sigmoid() * o["presence_logit_dec"].float().reshape(-1, 1).sigmoid()
            for p in range(stop - s):
                order = torch.argsort(scores[p], descending=True, stable=True)
                keep = order[scores[p, order] > self.instance_thd]
                if keep.numel():
                    up = F.interpolate(
                        o["pred_masks"][p, keep][None].float(),
                        size=(h, w),
                        mode="bilinear",
                        align_corners=False,
                    )[0]
                    masks.append(up.sigmoid() > self.mask_thd)
        if not masks:
            return torch.zeros((0, h, w), dtype=torch.bool)
        return torch.cat(masks).cpu()
