"""Dense features from an open_clip EVA02-CLIP image tower (timm ``Eva`` inside ``TimmModel``).

open_clip builds ``EVA02-B-16`` / ``EVA02-L-14-336`` (the towers of CLIPSelf's released models) as
``visual = TimmModel(trunk=timm.models.eva.Eva)``. Compared with the ViT of ``clip_vit.py`` an
EVA02 block has separate q/k/v projections (q and v biases, no k bias), rotary position
embeddings (RoPE) applied to q and k of the patch tokens, a LayerNorm on the attention output
before ``proj`` ("sub-LN") and a SwiGLU MLP; the projection to the text space is the trunk's
``norm`` then its ``head`` (``Linear`` with bias).

:class:`EvaBlockView` presents a timm ``EvaBlock`` through the interface the
:class:`~ovdense.modeling.strategies.AttentionStrategy` classes use (``ln_1``,
``attn.in_proj_weight`` / ``in_proj_bias`` / ``out_proj`` / ``num_heads``, ``qk_transform``,
``ls_1``, ``mlp``, ``ln_2``, ``ls_2``), so the very same strategy objects (vanilla, maskclip,
sclip, clearclip, naclip, proxy, ...) run on both towers. :class:`DenseEVABackbone` is the
EVA sibling of :class:`~ovdense.modeling.backbones.clip_vit.DenseCLIPBackbone` (both over
:class:`~ovdense.modeling.backbones.tower.DenseTowerBackbone`); ``dense_backbone_for(clip)``
returns one when ``clip`` has an EVA tower.

At any patch grid: the absolute position embedding is interpolated with
:func:`~ovdense.modeling.layers.interpolate_pos_embed` (``pos_interp`` as for the
ViT), the rotary embedding is rebuilt for the grid by timm's own rotary module (its
``ref_feat_shape`` rescaling, i.e. EVA's ``ft_seq_len`` interpolation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..layers import grid_cached
from ..strategies import AttentionStrategy, TokenContext
from .base import check_patch_images
from .tower import DenseTowerBackbone

__all__ = ["DenseEVABackbone", "EvaBlockView", "is_eva_tower", "rope_for_grid"]


def is_eva_tower(module: nn.Module | None) -> bool:
    """True for an open_clip ``TimmModel`` whose trunk is a timm ``Eva`` (EVA02-CLIP), or for an
    open_clip model holding one as ``.visual``."""
    visual = getattr(module, "visual", module)
    try:
        from open_clip.timm_model import TimmModel
        from timm.models.eva import Eva
    except ImportError:  # pragma: no cover - timm is a dependency of the EVA towers only
        return False
    return isinstance(visual, TimmModel) and isinstance(getattr(visual, "trunk", None), Eva)


def rope_for_grid(rope: nn.Module | None, grid: tuple[int, int]) -> Tensor | None:
    """timm's concatenated sin/cos rotary embedding ``[gh * gw, 2 * rot_dim]`` for a patch grid.

    At the grid the module was built for this is exactly what timm's ``Eva`` uses; at another
    grid timm's ``RotaryEmbeddingCat`` builds it from its frequency bands (what ``Eva`` does with
    ``dynamic_img_size=True``): with ``ref_feat_shape`` the coordinates are rescaled so the grid
    spans the reference one (EVA-CLIP's RoPE interpolation).
    """
    if rope is None:
        return None
    r: Any = rope  # timm's rotary module (its methods are read by name)
    feat_shape = getattr(rope, "feat_shape", None)
    if feat_shape is not None and tuple(feat_shape) == tuple(grid):
        return r.get_embed()
    if not getattr(rope, "_use_cached_embed", True):
        return r.get_embed(shape=list(grid))
    build = getattr(rope, "_build_embed_cat", None)
    if build is None or getattr(rope, "bands", None) is None:
        raise ValueError(
            f"Cannot rebuild the rotary embedding {type(rope).__name__} for a {grid[0]}x{grid[1]} "
            "grid; only timm's RotaryEmbeddingCat (EVA02) is supported. Feed images of the "
            "tower's native size instead."
        )
    return build(list(grid), r.bands)


class _EvaAttnView:
    """The attributes of ``block.attn`` that ``strategies.base._attn_params`` reads, for an
    ``EvaAttention``: a fused ``[3C, C]`` input projection and ``out_proj = proj(norm(.))``."""

    def __init__(self, attn: nn.Module) -> None:
        eva_attn: Any = attn  # timm's EvaAttention (checked by check_eva_block)
        self._attn = eva_attn
        self.num_heads = int(eva_attn.num_heads)

    @property
    def in_proj_weight(self) -> Tensor:
        a = self._attn
        if a.qkv is not None:
            return a.qkv.weight
        return torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight], dim=0)

    @property
    def in_proj_bias(self) -> Tensor | None:
        a = self._attn
        if a.qkv is not None:
            if a.q_bias is None:
                return None
            return torch.cat([a.q_bias, torch.zeros_like(a.q_bias), a.v_bias])
        parts = [a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]
        if all(p is None for p in parts):
            return None
        ref = next(p for p in parts if p is not None)
        return torch.cat([torch.zeros_like(ref) if p is None else p for p in parts])

    def out_proj(self, o: Tensor) -> Tensor:
        """``[B, L, C]`` merged heads -> sub-LN -> ``proj`` -> ``[B, L, C]``."""
        a = self._attn
        return a.proj_drop(a.proj(a.norm(o)))


class EvaBlockView:
    """A timm ``EvaBlock`` seen through the interface of open_clip's ``ResidualAttentionBlock``
    that :class:`~ovdense.modeling.strategies.AttentionStrategy` uses.

    Built per forward call for one patch grid (it holds that grid's rotary embedding). Shares
    the block's modules and parameters (gradients flow to them).

    Args:
        block: a timm ``EvaBlock`` with ``EvaAttention``.
        rope: ``[N, 2 * rot_dim]`` rotary embedding of the patch tokens (``None``: no RoPE).
        num_prefix_tokens: tokens before the patches (the CLS token), which RoPE skips.
    """

    def __init__(self, block: nn.Module, rope: Tensor | None, num_prefix_tokens: int = 1) -> None:
        check_eva_block(block)
        eva_block: Any = block  # timm's EvaBlock (checked): its parts are read by name
        self.block = eva_block
        self.rope = rope
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.ln_1 = eva_block.norm1
        self.ln_2 = eva_block.norm2
        self.mlp = eva_block.mlp
        self.attn = _EvaAttnView(eva_block.attn)

    def qk_transform(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """timm's ``q_norm``/``k_norm`` then RoPE on the patch tokens, ``[B, heads, L, hd]``."""
        from timm.layers import apply_rot_embed_cat

        attn = self.block.attn
        q, k = attn.q_norm(q), attn.k_norm(k)
        rope = self.rope
        if rope is None:
            return q, k
        n = self.num_prefix_tokens
        half = bool(getattr(attn, "rotate_half", False))

        def rotate(t: Tensor) -> Tensor:
            rot = apply_rot_embed_cat(t[:, :, n:], rope, half=half).to(t.dtype)
            return torch.cat([t[:, :, :n], rot], dim=2)

        return rotate(q), rotate(k)

    def ls_1(self, t: Tensor) -> Tensor:
        """Layer scale (``gamma_1``) and drop path of the attention branch."""
        if self.block.gamma_1 is not None:
            t = self.block.gamma_1 * t
        return self.block.drop_path1(t)

    def ls_2(self, t: Tensor) -> Tensor:
        """Layer scale (``gamma_2``) and drop path of the MLP branch."""
        if self.block.gamma_2 is not None:
            t = self.block.gamma_2 * t
        return self.block.drop_path2(t)


def check_eva_block(block: nn.Module) -> None:
    """Raise ``ValueError`` for timm EVA blocks the strategies cannot compute exactly."""
    from timm.models.eva import EvaAttention, EvaBlock

    if not isinstance(block, EvaBlock) or not isinstance(block.attn, EvaAttention):
        raise ValueError(
            f"Dense strategies support timm EvaBlock/EvaAttention (EVA02-CLIP), got "
            f"{type(block).__name__}/{type(getattr(block, 'attn', None)).__name__} (post-norm "
            "EVA blocks and RoPE-ViT attention are not supported)."
        )
    attn = block.attn
    if getattr(attn, "gate", None) is not None:
        raise ValueError("Dense strategies do not support gated EVA attention.")
    width = block.norm1.normalized_shape[-1]
    if attn.num_heads * attn.head_dim != width:
        raise ValueError(
            f"EVA attention width {attn.num_heads}x{attn.head_dim} differs from the block "
            f"width {width}; not supported by the dense strategies."
        )


def _output_dim(visual: Any) -> int:
    trunk = visual.trunk
    dim = int(trunk.embed_dim)
    if isinstance(trunk.head, nn.Linear):
        dim = int(trunk.head.out_features)
    for m in visual.head:
        if isinstance(m, nn.Linear):
            dim = int(m.out_features)
        elif hasattr(m, "fc2"):
            dim = int(m.fc2.out_features)
    return dim


class DenseEVABackbone(DenseTowerBackbone):
    """An open_clip EVA02-CLIP tower whose last block is computed by an
    :class:`AttentionStrategy` (same contract and arguments as :class:`DenseCLIPBackbone`, its
    sibling over :class:`~ovdense.modeling.backbones.tower.DenseTowerBackbone`).

    Args:
        clip: an open_clip model (``CustomTextCLIP``) with an EVA tower, or the tower
            (``TimmModel`` with a timm ``Eva`` trunk). Shared, not copied.
        strategy, strategy_kwargs, pos_interp, out_indices: as for :class:`DenseCLIPBackbone`.

    ``forward(images)`` takes ``[B, 3, H, W]`` normalised with ``mean``/``std`` (OpenAI's for
    EVA02-CLIP) and any ``H, W >= patch_size``; trailing pixels that do not fill a patch are
    dropped. Returns :class:`DenseFeatures` with ``dense`` ``[B, D, H // p, W // p]`` in the CLIP
    joint space (trunk ``norm`` + ``head`` + open_clip ``head``), L2-normalised. At the native
    size, ``strategy="vanilla"`` reproduces the tower's own tokens and ``global_embed`` equals
    ``normalize(clip.encode_image(images))``.

    Not supported (``ValueError``): towers without token pooling (``global_pool != "token"``),
    register tokens, post-norm or gated blocks, per-layer ("mixed") RoPE. Patch dropout is not
    applied (dense features need every patch).
    """

    def __init__(
        self,
        clip: nn.Module,
        strategy: str | AttentionStrategy = "vanilla",
        strategy_kwargs: dict[str, Any] | None = None,
        pos_interp: str = "size",
        out_indices: Sequence[int] = (),
    ) -> None:
        visual: Any = getattr(clip, "visual", clip)
        if not is_eva_tower(visual):
            raise TypeError(
                "DenseEVABackbone needs an open_clip EVA tower (TimmModel with a timm Eva trunk, "
                f"e.g. load_clip('EVA02-B-16', ...)), got {type(visual).__name__}."
            )
        trunk = visual.trunk
        problems = []
        if trunk.global_pool != "token":
            problems.append(f"global_pool={trunk.global_pool!r} (needs 'token')")
        if trunk.cls_token is None or trunk.num_prefix_tokens != 1:
            problems.append(f"{trunk.num_prefix_tokens} prefix tokens (needs exactly a CLS token)")
        if trunk.pos_embed is not None and getattr(trunk, "no_embed_class", False):
            problems.append("no_embed_class=True")
        if getattr(trunk, "rope_mixed", False):
            problems.append("per-layer (mixed) RoPE")
        if any(name == "pool" for name, _ in visual.head.named_children()):
            problems.append("an open_clip attention-pool head")
        if problems:
            raise ValueError(
                "DenseEVABackbone supports EVA02-CLIP towers (EVA02-B-16, EVA02-L-14-336, ...); "
                "this tower has " + ", ".join(problems) + "."
            )
        for blk in trunk.blocks:
            check_eva_block(blk)
        super().__init__(
            visual,
            strategy,
            strategy_kwargs,
            pos_interp,
            out_indices,
            patch_size=trunk.patch_embed.patch_size,
            grid_size=trunk.patch_embed.grid_size,
            embed_dim=_output_dim(visual),
            width=trunk.embed_dim,
        )
        self._rope_cache: dict[tuple, Tensor | None] = {}

    @property
    def trunk(self) -> nn.Module:
        """The timm ``Eva`` inside the open_clip tower."""
        return self.visual.trunk

    @property
    def blocks(self) -> nn.ModuleList:
        """timm's ``trunk.blocks``."""
        return self.visual.trunk.blocks

    def native_pos_embed(self) -> Tensor | None:
        """``trunk.pos_embed[0]``, ``[1 + gh0 * gw0, C]``, or None."""
        pe = self.visual.trunk.pos_embed
        return None if pe is None else pe[0]

    def rope(self, grid: tuple[int, int], device: torch.device) -> Tensor | None:
        """Rotary embedding ``[gh * gw, 2 * rot_dim]`` of the patch tokens (cached per grid)."""
        rope = self.visual.trunk.rope
        if rope is None:
            return None

        def compute() -> Tensor | None:
            emb = rope_for_grid(rope, grid)
            return None if emb is None else emb.to(device)

        return grid_cached(self._rope_cache, (tuple(grid), str(device)), compute)

    def embed_tokens(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch + CLS + position embedding + ``norm_pre``: ``[B, 1 + gh*gw, C]`` and the grid."""
        check_patch_images(images, self.patch_size)
        t: Any = self.trunk  # timm's Eva: its parts are read by name
        pe = t.patch_embed
        # timm's PatchEmbed asserts the native size unless built dynamic: use its parts
        x = pe.proj(images.to(pe.proj.weight.dtype))
        # NOTE: no int(): while torch.export traces a dynamic image size these are symbolic
        # (an int() would fix the graph to the example's grid)
        grid = (x.shape[-2], x.shape[-1])
        x = pe.norm(x.flatten(2).transpose(1, 2))
        cls = t.cls_token.to(x.dtype).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        pos = self.pos_embed(grid, x.dtype)
        if pos is not None:
            x = x + pos
        x = t.pos_drop(x)
        return t.norm_pre(x), grid

    def forward_trunk(self, x: Tensor, ctx: TokenContext) -> tuple[Tensor, dict[str, Tensor]]:
        """timm's EVA blocks but the last, with the grid's rotary embedding."""
        rope = self.rope(ctx.grid, x.device)
        taps = self.open_trunk(ctx)
        inter: dict[str, Tensor] = {}
        if -1 in taps:
            ctx.block_outputs[-1] = x
        for i, blk in enumerate(self.blocks[:-1]):
            x = blk(x, rope=rope)
            if i in taps:
                ctx.block_outputs[i] = x
            if i in self.out_indices:
                inter[f"block{i}"] = self._to_nchw(x, ctx.grid)
        return x, inter

    def last_block(self, x: Tensor, ctx: TokenContext) -> Any:
        """An :class:`EvaBlockView` of the last block for ``ctx.grid``."""
        rope = self.rope(ctx.grid, x.device)
        return EvaBlockView(self.blocks[-1], rope, self.visual.trunk.num_prefix_tokens)

    def block_view(self, index: int, ctx: TokenContext) -> Any:
        """An :class:`EvaBlockView` of block ``index`` for ``ctx.grid``."""
        rope = self.rope(ctx.grid, next(self.blocks[index].parameters()).device)
        return EvaBlockView(self.blocks[index], rope, self.visual.trunk.num_prefix_tokens)

    def project(self, tokens: Tensor) -> Tensor:
        """Trunk ``norm``, ``fc_norm``, ``head`` and open_clip's ``head``: ``[..., C]`` ->
        ``[..., D]`` (the joint text space), applied per token."""
        t: Any = self.trunk  # timm's Eva: its parts are read by name
        x = t.head(t.head_drop(t.fc_norm(t.norm(tokens))))
        return self.visual.head(x)
