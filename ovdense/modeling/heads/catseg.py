"""CAT-Seg's cost-aggregation head (Cho et al., CVPR 2024), a trainable segmentation head.

Data flow for ``B`` images, ``N`` class names, ``P`` prompt templates, a ``h x w`` feature grid::

    cost[b, p, n, y, x] = cos(dense[b, :, y, x], embeds[n, p])          # [B, P, N, h, w]
    x = conv7x7(cost over P)                                            # [B, N, C, h, w]
    repeat num_layers:
        x = spatial aggregation (two Swin blocks per class, q/k see the image guidance)
        x = class aggregation (linear attention over the N classes at every pixel, q/k see the
            text guidance; average-pooled tokens, upsampled back, residual)
    logits = decoder(x) per class: two x2 transposed-conv stages, each concatenated with a
             projected intermediate CLIP feature map, then a 3x3 conv to one channel
                                                                        # [B, N, 4h, 4w]

Everything but the class aggregation is computed class by class, so the head runs over
``class_chunk`` classes at a time; the class aggregation's linear attention is a sum over classes
(``sum_s phi(k_s) v_s^T`` and ``sum_s phi(k_s)``), accumulated chunk by chunk in a first pass and
queried chunk by chunk in a second, so chunked and unchunked outputs are equal (up to float
summation order) and the peak memory is that of one chunk plus the ``[B, N, C, h, w]`` embedding.

Differences from the official code and reasons are listed in ``docs/methods.md#cat-seg``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import SEG_HEADS

__all__ = ["CATSegHead", "ClassAggregation", "GuidedSwinBlock", "SpatialAggregation"]


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def _guided_linear(layer: nn.Linear, x: Tensor, guidance: Tensor | None) -> Tensor:
    """``layer(cat([x, guidance], -1))`` computed as two products, so that a guidance shared by
    many classes is projected once and broadcast (``guidance`` broadcastable to ``x``'s leading
    dims)."""
    dim = x.shape[-1]
    out = F.linear(x, layer.weight[:, :dim], layer.bias)
    if guidance is not None:
        out = out + F.linear(guidance, layer.weight[:, dim:])
    return out


@lru_cache(maxsize=32)
def _window_mask(
    h: int, w: int, win: tuple[int, int], shift: tuple[int, int], device: torch.device
) -> Tensor | None:
    """Additive attention mask ``[num_windows, wh*ww, wh*ww]`` (0 or -100) of a (shifted)
    window partition of a ``h x w`` grid padded to multiples of the window ``(wh, ww)``: tokens
    attend only to tokens of the same region (Swin's shifted-window mask) and real tokens never
    to padding. ``None`` when nothing is masked."""
    (wh, ww), (sh, sw) = win, shift
    hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
    if (sh, sw) == (0, 0) and (hp, wp) == (h, w):
        return None
    ids = torch.zeros(hp, wp, dtype=torch.long)
    rows = (slice(0, -wh), slice(-wh, -sh), slice(-sh, None)) if sh else (slice(None),)
    cols = (slice(0, -ww), slice(-ww, -sw), slice(-sw, None)) if sw else (slice(None),)
    for i, rs in enumerate(rows):
        for j, cs in enumerate(cols):
            ids[rs, cs] = 3 * i + j
    pad = torch.ones(hp, wp, dtype=torch.long)
    pad[:h, :w] = 0
    pad = torch.roll(pad, shifts=(-sh, -sw), dims=(0, 1))
    ids = ids + 16 * pad
    cells = ids.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    mask = (cells[:, None, :] != cells[:, :, None]).float() * -100.0
    return mask.to(device)


class GuidedSwinBlock(nn.Module):
    """A Swin block (window attention, pre-norm, MLP) whose queries and keys also see a guidance
    map: ``q, k = Linear(cat(norm1(x), g))``, ``v = Linear(norm1(x))``; no relative position
    bias (as in CAT-Seg).

    Args:
        dim: channels of ``x``.
        guidance_dim: channels of the guidance (0: none).
        num_heads: attention heads.
        window_size: window side in cells (shrunk to the grid when the grid is smaller).
        shifted: shift the windows by half a window (the second block of a pair).
        mlp_ratio: hidden size of the MLP over ``dim``.
    """

    def __init__(
        self,
        dim: int,
        guidance_dim: int,
        num_heads: int,
        window_size: int,
        shifted: bool,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.dim, self.num_heads, self.window_size, self.shifted = (
            dim,
            num_heads,
            window_size,
            shifted,
        )
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def window_layout(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(window, shift)`` in cells per axis on a ``h x w`` grid: the window is cut to the
        grid along an axis shorter than it (one window, no shift there, as the official code
        does on grids smaller than the window); the shift is half a window."""
        win = (min(self.window_size, h), min(self.window_size, w))
        if not self.shifted:
            return win, (0, 0)
        sh = win[0] // 2 if h > self.window_size else 0
        sw = win[1] // 2 if w > self.window_size else 0
        return win, (sh, sw)

    @staticmethod
    def _windows(t: Tensor, win: tuple[int, int], shift: tuple[int, int]) -> Tensor:
        """``[M, h, w, C]`` -> ``[M * nW, wh*ww, C]`` (zero-padded, rolled by ``-shift``)."""
        m, h, w, c = t.shape
        (wh, ww), (sh, sw) = win, shift
        hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
        if (hp, wp) != (h, w):
            t = F.pad(t, (0, 0, 0, wp - w, 0, hp - h))
        if sh or sw:
            t = torch.roll(t, shifts=(-sh, -sw), dims=(1, 2))
        t = t.view(m, hp // wh, wh, wp // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(-1, wh * ww, c)

    def forward(self, x: Tensor, guidance: Tensor | None) -> Tensor:
        """Args:
            x: ``[B, K, h, w, C]`` (``K`` classes of each image).
            guidance: ``[B, h, w, G]`` (normalised image guidance) or ``None``.

        Returns:
            ``[B, K, h, w, C]``.
        """
        b, k, h, w, c = x.shape
        win, shift = self.window_layout(h, w)
        (wh, ww), (sh, sw) = win, shift
        hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
        nw, area, heads = (hp // wh) * (wp // ww), wh * ww, self.num_heads
        y = self.norm1(x)
        yw = self._windows(y.reshape(b * k, h, w, c), win, shift).view(b, k, nw, area, c)
        gw = (
            None
            if guidance is None
            else self._windows(guidance, win, shift).view(b, 1, nw, area, -1)
        )
        q = _guided_linear(self.q, yw, gw)
        kk = _guided_linear(self.k, yw, gw)
        v = self.v(yw)

        def split(t: Tensor) -> Tensor:  # [B, K, nW, A, C] -> [B*K, nW, heads, A, C/heads]
            return t.reshape(b * k, nw, area, heads, c // heads).transpose(2, 3)

        mask = _window_mask(h, w, win, shift, x.device)
        # per window, the same for every image and class: [nW, 1, A, A] broadcast
        bias = None if mask is None else mask.to(q.dtype)[:, None]
        o = F.scaled_dot_product_attention(split(q), split(kk), split(v), attn_mask=bias)
        o = self.proj(o.transpose(2, 3).reshape(b * k, hp // wh, wp // ww, wh, ww, c))
        o = o.permute(0, 1, 3, 2, 4, 5).reshape(b * k, hp, wp, c)
        if sh or sw:
            o = torch.roll(o, shifts=(sh, sw), dims=(1, 2))
        x = x + o[:, :h, :w].reshape(b, k, h, w, c)
        return x + self.mlp(self.norm2(x))


class SpatialAggregation(nn.Module):
    """Two guided Swin blocks (regular, then shifted windows) applied to each class's map; the
    guidance is layer-normalised first."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.block1 = GuidedSwinBlock(dim, guidance_dim, num_heads, window_size, shifted=False)
        self.block2 = GuidedSwinBlock(dim, guidance_dim, num_heads, window_size, shifted=True)
        self.guidance_norm = nn.LayerNorm(guidance_dim) if guidance_dim > 0 else None

    def forward(self, x: Tensor, guidance: Tensor | None) -> Tensor:
        """``x [B, K, h, w, C]``, ``guidance [B, h, w, G]`` -> ``[B, K, h, w, C]``."""
        g = None
        if guidance is not None and self.guidance_norm is not None:
            g = self.guidance_norm(guidance)
        return self.block2(self.block1(x, g), g)


def _phi(t: Tensor) -> Tensor:
    """The positive feature map of linear attention (Katharopoulos et al., 2020)."""
    return F.elu(t) + 1


class ClassAggregation(nn.Module):
    """Linear attention over classes at every (average-pooled) pixel, pre-norm, ReLU MLP; the
    pooled result is upsampled (bilinear, corners aligned) and added to the input.

    With ``pad_len > 0`` the class sequence is padded to ``pad_len`` tokens with one learnt
    token (and a learnt guidance) when there are fewer classes, as in the official code; the
    padding enters only the sums over keys and values.

    The attention is computed in two passes over class chunks: :meth:`key_value_sums`
    accumulates ``sum_s phi(k_s) v_s^T`` and ``sum_s phi(k_s)`` over every class, then
    :meth:`attend_chunk` queries them for one chunk; see :meth:`forward` for the one-chunk call.

    Args:
        dim: channels of the class embeddings.
        guidance_dim: channels of the text guidance (0: none).
        num_heads: attention heads.
        pool_size: average pooling before the attention in training mode.
        eval_pool_size: pooling in eval mode (the official evaluation uses 1).
        pad_len: padded class-sequence length (0: no padding).
    """

    eps = 1e-6

    def __init__(
        self,
        dim: int,
        guidance_dim: int,
        num_heads: int,
        pool_size: int | Sequence[int] = 2,
        eval_pool_size: int | Sequence[int] = 1,
        pad_len: int = 256,
    ) -> None:
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.pool_size, self.eval_pool_size = _pair(pool_size), _pair(eval_pool_size)
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))
        self.pad_len = int(pad_len)
        self.pad_token = nn.Parameter(torch.zeros(dim)) if pad_len > 0 else None
        self.pad_guidance = (
            nn.Parameter(torch.zeros(guidance_dim)) if pad_len > 0 and guidance_dim > 0 else None
        )

    def pool(self, x: Tensor) -> Tensor:
        """``[B, K, h, w, C]`` -> average-pooled ``[B, K, h', w', C]``."""
        size = self.pool_size if self.training else self.eval_pool_size
        if size == (1, 1):
            return x
        b, k, h, w, c = x.shape
        y = F.avg_pool2d(x.reshape(b * k, h, w, c).permute(0, 3, 1, 2), size)
        return y.permute(0, 2, 3, 1).reshape(b, k, y.shape[-2], y.shape[-1], c)

    def _heads(self, t: Tensor) -> Tensor:
        return t.reshape(*t.shape[:-1], self.num_heads, self.dim // self.num_heads)

    def key_value_sums(self, pooled: Tensor, guidance: Tensor | None) -> tuple[Tensor, Tensor]:
        """Sums over the classes of one chunk.

        Args:
            pooled: ``[B, K, h', w', C]`` pooled class embeddings.
            guidance: ``[K, G]`` projected text guidance of those classes, or ``None``.

        Returns:
            ``(kv [B, h', w', H, C/H, C/H], ksum [B, h', w', H, C/H])``.
        """
        n = self.norm1(pooled)
        g = None if guidance is None else guidance[None, :, None, None, :]
        # NOTE: sums over hundreds of classes in float32, also under fp16 autocast (the official
        # code rescales the values against fp16 overflow instead)
        k = _phi(self._heads(_guided_linear(self.k, n, g))).float()
        v = self._heads(self.v(n)).float()
        return torch.einsum("bkyxhd,bkyxhe->byxhde", k, v), k.sum(dim=1)

    def padding_sums(self, num_classes: int) -> tuple[Tensor, Tensor] | None:
        """The padding tokens' share of the sums (``[H, C/H, C/H]``, ``[H, C/H]``) when fewer
        than ``pad_len`` classes are aggregated, else ``None``."""
        if self.pad_token is None or num_classes >= self.pad_len:
            return None
        n = self.norm1(self.pad_token)
        k = _phi(self._heads(_guided_linear(self.k, n, self.pad_guidance))).float()
        v = self._heads(self.v(n)).float()
        count = self.pad_len - num_classes
        return count * torch.einsum("hd,he->hde", k, v), count * k

    def attend_chunk(
        self,
        x: Tensor,
        pooled: Tensor,
        guidance: Tensor | None,
        sums: tuple[Tensor, Tensor],
    ) -> Tensor:
        """Attention output for one chunk, MLP, upsampling and residual.

        Args:
            x: ``[B, K, h, w, C]`` the chunk's class embeddings.
            pooled: ``self.pool(x)``.
            guidance: ``[K, G]`` or ``None``.
            sums: ``(kv, ksum)`` over every class (and the padding).

        Returns:
            ``[B, K, h, w, C]``.
        """
        kv, ksum = sums
        n = self.norm1(pooled)
        g = None if guidance is None else guidance[None, :, None, None, :]
        q = _phi(self._heads(_guided_linear(self.q, n, g))).float()  # [B, K, y, x, H, d]
        num = torch.einsum("bkyxhd,byxhde->bkyxhe", q, kv)
        den = torch.einsum("bkyxhd,byxhd->bkyxh", q, ksum).unsqueeze(-1) + self.eps
        y = pooled + (num / den).flatten(-2).to(pooled.dtype)
        y = y + self.mlp(self.norm2(y))
        b, k, hp, wp, c = y.shape
        h, w = x.shape[2:4]
        if (hp, wp) != (h, w):
            y = F.interpolate(
                y.reshape(b * k, hp, wp, c).permute(0, 3, 1, 2),
                size=(h, w),
                mode="bilinear",
                align_corners=True,
            )
            y = y.permute(0, 2, 3, 1).reshape(b, k, h, w, c)
        return x + y

    def forward(self, x: Tensor, guidance: Tensor | None) -> Tensor:
        """All classes at once: ``x [B, N, h, w, C]``, ``guidance [N, G]`` -> same shape."""
        pooled = self.pool(x)
        kv, ksum = self.key_value_sums(pooled, guidance)
        pad = self.padding_sums(x.shape[1])
        if pad is not None:
            kv, ksum = kv + pad[0], ksum + pad[1]
        return self.attend_chunk(x, pooled, guidance, (kv, ksum))


class _DecoderStage(nn.Module):
    """x2 transposed conv, concatenation with a guidance map, two (3x3 conv, GroupNorm, ReLU)."""

    def __init__(self, in_dim: int, out_dim: int, guidance_dim: int) -> None:
        super().__init__()
        self.guidance_dim = guidance_dim
        self.up = nn.ConvTranspose2d(in_dim, in_dim - guidance_dim, kernel_size=2, stride=2)
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(max(1, out_dim // 16), out_dim)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(max(1, out_dim // 16), out_dim)

    def forward(self, x: Tensor, guidance: Tensor | None, per_image: int) -> Tensor:
        """``x [M * K, C, h, w]`` (``K = per_image`` maps of each of ``M`` images), ``guidance
        [M, G, 2h, 2w]`` -> ``[M * K, out, 2h, 2w]``."""
        up = self.up(x)
        c = up.shape[1]
        # conv(cat(up, g)) = conv_up(up) + conv_g(g): the guidance part once per image
        y = F.conv2d(up, self.conv1.weight[:, :c], padding=1)
        if guidance is not None and self.guidance_dim > 0:
            gy = F.conv2d(guidance, self.conv1.weight[:, c:], padding=1)
            y = (y.unflatten(0, (-1, per_image)) + gy[:, None]).flatten(0, 1)
        y = F.relu(self.norm1(y))
        return F.relu(self.norm2(self.conv2(y)))


@SEG_HEADS.register("catseg")
class CATSegHead(nn.Module):
    """CAT-Seg's cost-aggregation head: dense CLIP features, intermediate CLIP block outputs and
    per-template class embeddings -> one logit map per class at 4x the feature resolution.

    Tensor contract (no segmentor needed, see the module docstring for the data flow)::

        head(dense [B, D, h, w], embeds [N, P, D] (or [N, D]: P = 1),
             intermediates=[block_i [B, W, h, w] for i in intermediate_layers])
            -> logits [B, N, 4h, 4w]

    ``dense`` and ``embeds`` need not be normalised (the cost volume uses cosines). The head
    declares what it needs, and the :class:`~ovdense.modeling.segmentors.Segmentor` provides
    it: ``per_template = True`` (embeddings per prompt template, ``P`` of them) and
    ``intermediate_layers`` (0-based ViT block indices whose output tokens guide the decoder;
    CAT-Seg uses blocks 3 and 7 of ViT-B/16, 7 and 15 of ViT-L/14). Logits are calibrated:
    a class's probability is ``sigmoid(logit)`` (the head is trained with binary
    cross-entropy), so a segmentor uses ``logit_scale=1``.

    Args:
        embed_dim: ``D``, the joint image-text dimension (512 for ViT-B/16, 768 for ViT-L/14).
        intermediate_dim: channels of the intermediate block outputs (the ViT width: 768,
            1024).
        intermediate_layers: the two block indices (shallower first): the first guides the
            first decoder stage (at 2x), the second the last stage (at 4x).
        num_templates: ``P``, prompt templates per class (the cost volume's channels).
        hidden_dim: channels of the aggregated cost (128).
        num_layers: aggregation layers, each spatial then class aggregation (2 in the
            official ViT-B and ViT-L configs).
        num_heads: attention heads of both aggregations (4).
        window_size: Swin window in cells (12 on the 24x24 grid of a 384 crop).
        pool_size: average pooling of the class aggregation in training (2), and
            ``eval_pool_size`` in eval mode (1).
        pad_len: class-sequence length of the class aggregation (256). Fewer classes are padded
            with a learnt token; with more, only the ``pad_len`` classes of highest cost (max
            over templates and pixels) are aggregated and decoded, the others get logit
            ``-100`` (the official behaviour on ADE-847 and PC-459). 0 disables both.
        guidance_dim: projected image and text guidance channels (128).
        decoder_dims: channels of the two decoder stages (64, 32).
        decoder_guidance_dims: channels the intermediate maps are upsampled to (256, 128).
        decoder_guidance_proj_dims: and then projected to (32, 16).
        class_chunk: classes processed at a time (``None``: all); bounds the memory for large
            vocabularies without changing the result.
        raw_features: whether the head takes the *unnormalised* projected dense features (the
            official code's image guidance reads them; the cost volume normalises anyway).
            The segmentor and :class:`~ovdense.modeling.segmentors.CATSegModel` read this
            attribute and pass ``DenseFeatures.unnormalized()`` when it is set; ``False`` gives
            the guidance L2-normalised features (what ovdense did before version 0.x's
            converter; the shapes-world head was trained so).
    """

    per_template = True

    def __init__(
        self,
        embed_dim: int = 512,
        intermediate_dim: int = 768,
        intermediate_layers: Sequence[int] = (3, 7),
        num_templates: int = 1,
        hidden_dim: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        window_size: int = 12,
        pool_size: int | Sequence[int] = 2,
        eval_pool_size: int | Sequence[int] = 1,
        pad_len: int = 256,
        guidance_dim: int = 128,
        decoder_dims: Sequence[int] = (64, 32),
        decoder_guidance_dims: Sequence[int] = (256, 128),
        decoder_guidance_proj_dims: Sequence[int] = (32, 16),
        class_chunk: int | None = 32,
        raw_features: bool = True,
    ) -> None:
        super().__init__()
        self.raw_features = bool(raw_features)
        layers = tuple(int(i) for i in intermediate_layers)
        if len(layers) not in (0, 2):
            raise ValueError(
                f"intermediate_layers takes two block indices (or none), got {layers}."
            )
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}.")
        if class_chunk is not None and class_chunk < 1:
            raise ValueError(f"class_chunk must be >= 1 or None, got {class_chunk}.")
        self.intermediate_layers = layers
        self.embed_dim, self.num_templates = int(embed_dim), int(num_templates)
        self.pad_len = int(pad_len)
        self.class_chunk = class_chunk
        self.cost_embed = nn.Conv2d(num_templates, hidden_dim, kernel_size=7, padding=3)
        self.image_guidance = nn.Sequential(
            nn.Conv2d(embed_dim, guidance_dim, 3, padding=1), nn.ReLU()
        )
        self.text_guidance = nn.Sequential(nn.Linear(embed_dim, guidance_dim), nn.ReLU())
        self.spatial = nn.ModuleList(
            SpatialAggregation(hidden_dim, guidance_dim, num_heads, window_size)
            for _ in range(num_layers)
        )
        self.classwise = nn.ModuleList(
            ClassAggregation(
                hidden_dim, guidance_dim, num_heads, pool_size, eval_pool_size, pad_len
            )
            for _ in range(num_layers)
        )
        g_dims, gp_dims = tuple(decoder_guidance_dims), tuple(decoder_guidance_proj_dims)
        self.intermediate_up: nn.ModuleList | None = None
        self.intermediate_proj: nn.ModuleList | None = None
        if layers:
            # the intermediate maps upsampled x2 and x4 (transposed convs), then projected
            self.intermediate_up = nn.ModuleList(
                [
                    nn.ConvTranspose2d(intermediate_dim, g_dims[0], kernel_size=2, stride=2),
                    nn.ConvTranspose2d(intermediate_dim, g_dims[1], kernel_size=4, stride=4),
                ]
            )
            self.intermediate_proj = nn.ModuleList(
                nn.Sequential(nn.Conv2d(d, p, 3, padding=1), nn.ReLU())
                for d, p in zip(g_dims, gp_dims, strict=True)
            )
        else:
            gp_dims = (0, 0)
        d0, d1 = tuple(decoder_dims)
        self.decoder1 = _DecoderStage(hidden_dim, d0, gp_dims[0])
        self.decoder2 = _DecoderStage(d0, d1, gp_dims[1])
        self.out = nn.Conv2d(d1, 1, 3, padding=1)

    # -- pieces ---------------------------------------------------------------------------
    @staticmethod
    def cost_volume(dense: Tensor, embeds: Tensor) -> Tensor:
        """``cos(dense, embeds)``: ``[B, D, h, w]``, ``[N, P, D]`` -> ``[B, P, N, h, w]``."""
        d = F.normalize(dense, dim=1)
        e = F.normalize(embeds.to(d.dtype), dim=-1)
        return torch.einsum("bdyx,npd->bpnyx", d, e)

    def decoder_guidance(self, intermediates: Sequence[Tensor] | None) -> list[Tensor | None]:
        """The two intermediate maps upsampled (x2, x4) and projected."""
        if self.intermediate_up is None or self.intermediate_proj is None:
            return [None, None]
        if intermediates is None or len(intermediates) != 2:
            got = "none" if intermediates is None else f"{len(intermediates)} maps"
            raise ValueError(
                f"CATSegHead needs the outputs of blocks {self.intermediate_layers} as "
                f"intermediates (two [B, W, h, w] maps), got {got}."
            )
        return [
            proj(up(t))
            for up, proj, t in zip(
                self.intermediate_up, self.intermediate_proj, intermediates, strict=True
            )
        ]

    def decode(self, x: Tensor, guidance: list[Tensor | None]) -> Tensor:
        """``[B, K, h, w, C]`` -> logits ``[B, K, 4h, 4w]``."""
        b, k, h, w, c = x.shape
        y = x.reshape(b * k, h, w, c).permute(0, 3, 1, 2)
        y = self.decoder1(y, guidance[0], k)
        y = self.decoder2(y, guidance[1], k)
        return self.out(y).view(b, k, 4 * h, 4 * w)

    def _chunks(self, n: int) -> list[slice]:
        step = n if self.class_chunk is None else self.class_chunk
        return [slice(s, min(n, s + step)) for s in range(0, n, max(1, step))]

    def select_classes(self, cost: Tensor) -> Tensor | None:
        """Indices ``[B, pad_len]`` of the classes aggregated when there are more than
        ``pad_len`` (highest max cost over templates and pixels), else ``None``."""
        n = cost.shape[2]
        if self.pad_len <= 0 or n <= self.pad_len:
            return None
        score = cost.transpose(1, 2).flatten(2).amax(dim=-1)  # [B, N]
        return score.topk(self.pad_len, dim=-1, sorted=False).indices

    # -- forward --------------------------------------------------------------------------
    def forward(
        self,
        dense: Tensor,
        embeds: Tensor,
        intermediates: Sequence[Tensor] | None = None,
    ) -> Tensor:
        if embeds.ndim == 2:
            embeds = embeds[:, None]
        if embeds.ndim != 3 or dense.ndim != 4:
            raise ValueError(
                f"CATSegHead takes dense [B, D, h, w] and embeds [N, P, D] (or [N, D]), got "
                f"{tuple(dense.shape)} and {tuple(embeds.shape)}."
            )
        if dense.shape[1] != embeds.shape[-1] or dense.shape[1] != self.embed_dim:
            raise ValueError(
                f"Feature dim {dense.shape[1]}, text dim {embeds.shape[-1]}, head embed_dim "
                f"{self.embed_dim}: all three must agree."
            )
        if embeds.shape[1] != self.num_templates:
            raise ValueError(
                f"The head was built for {self.num_templates} prompt template(s) per class, got "
                f"embeddings for {embeds.shape[1]}; use the same template set as in training."
            )
        b, n = dense.shape[0], embeds.shape[0]
        h, w = dense.shape[-2:]
        cost = self.cost_volume(dense, embeds)
        selected = self.select_classes(cost)
        if selected is not None:
            logits = cost.new_full((b, n, 4 * h, 4 * w), -100.0)
            # each image aggregates its own classes: one image at a time
            for i in range(b):
                idx = selected[i]
                inter = None if intermediates is None else [t[i : i + 1] for t in intermediates]
                sub = self._aggregate(dense[i : i + 1], embeds[idx], cost[i : i + 1, :, idx], inter)
                logits[i, idx] = sub[0].to(logits.dtype)
            return logits
        return self._aggregate(dense, embeds, cost, intermediates)

    def _aggregate(
        self,
        dense: Tensor,
        embeds: Tensor,
        cost: Tensor,
        intermediates: Sequence[Tensor] | None,
    ) -> Tensor:
        b, p, n, h, w = cost.shape
        chunks = self._chunks(n)
        # embedding of the cost: [B, N, h, w, C], class by class
        x = torch.cat(
            [
                self.cost_embed(cost[:, :, s].transpose(1, 2).reshape(-1, p, h, w))
                .view(b, s.stop - s.start, -1, h, w)
                .permute(0, 1, 3, 4, 2)
                for s in chunks
            ],
            dim=1,
        )
        image_g = self.image_guidance(dense.to(x.dtype)).permute(0, 2, 3, 1)  # [B, h, w, G]
        text = F.normalize(F.normalize(embeds.to(x.dtype), dim=-1).mean(dim=1), dim=-1)
        text_g = self.text_guidance(text)  # [N, G]
        dec_g = self.decoder_guidance(intermediates)
        for i in range(len(self.spatial)):
            spatial = cast(SpatialAggregation, self.spatial[i])
            classwise = cast(ClassAggregation, self.classwise[i])
            x = torch.cat([spatial(x[:, s], image_g) for s in chunks], dim=1)
            sums: tuple[Tensor, Tensor] | None = None
            for s in chunks:
                part = classwise.key_value_sums(classwise.pool(x[:, s]), text_g[s])
                sums = part if sums is None else (sums[0] + part[0], sums[1] + part[1])
            assert sums is not None
            pad = classwise.padding_sums(n)
            if pad is not None:
                sums = (sums[0] + pad[0], sums[1] + pad[1])
            x = torch.cat(
                [
                    classwise.attend_chunk(x[:, s], classwise.pool(x[:, s]), text_g[s], sums)
                    for s in chunks
                ],
                dim=1,
            )
        return torch.cat([self.decode(x[:, s], dec_g) for s in chunks], dim=1)
