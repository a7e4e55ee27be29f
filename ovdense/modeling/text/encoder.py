"""Text side: vocabulary + templates -> normalised class-name embeddings, cached."""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...utils.io import atomic_write
from ...utils.weights import load_weights_file
from ...vocabulary import Vocabulary
from ..clip import model_fingerprint
from .templates import resolve_templates

__all__ = ["ClassEmbeddings", "TextEncoder"]


@dataclass
class ClassEmbeddings:
    """Embeddings of a vocabulary's names.

    Attributes:
        embeds: ``[N, D]`` one L2-normalised embedding per name (template-averaged).
        name_to_class: ``[N]`` int64 class index of each name.
        vocabulary: the vocabulary they were computed for.
        template_embeds: ``[N, P, D]`` one L2-normalised embedding per name and template
            (``embeds`` is their normalised mean), when asked for with ``per_template=True``
            (heads declaring ``per_template``, e.g. CAT-Seg's); else ``None``.
    """

    embeds: Tensor
    name_to_class: Tensor
    vocabulary: Vocabulary
    template_embeds: Tensor | None = None

    @property
    def num_classes(self) -> int:
        return self.vocabulary.num_classes

    def to(self, device: torch.device | str) -> ClassEmbeddings:
        per_t = None if self.template_embeds is None else self.template_embeds.to(device)
        return ClassEmbeddings(
            self.embeds.to(device), self.name_to_class.to(device), self.vocabulary, per_t
        )


# In-memory cache shared by every TextEncoder of the process: key -> [N, D] CPU tensor.
_MEMORY_CACHE: OrderedDict[str, Tensor] = OrderedDict()
_MEMORY_CACHE_SIZE = 32


class _TextTower:
    """Uniform access to the parts of open_clip's text transformer (CLIP or CustomTextCLIP)."""

    def __init__(self, clip: nn.Module) -> None:
        text = getattr(clip, "text", None)
        # open_clip's text tower (untyped): its parts are read by name
        self.owner: Any = text if text is not None and hasattr(text, "token_embedding") else clip
        o = self.owner
        self.can_trim = (
            hasattr(o, "token_embedding")
            and getattr(o, "attn_mask", None) is not None
            and getattr(o, "cls_emb", None) is None
            and self.pool_type in ("argmax", "eos")
        )

    @property
    def pool_type(self) -> str:
        o = self.owner
        return getattr(o, "text_pool_type", getattr(o, "pool_type", "argmax"))

    @property
    def eos_id(self) -> int | None:
        o = self.owner
        return getattr(o, "text_eos_id", getattr(o, "eos_id", None))

    def pool_index(self, tokens: Tensor) -> Tensor:
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        eos_id = self.eos_id
        if eos_id is None:
            raise ValueError("eos pooling needs the text tower's eos_id.")
        return (tokens == eos_id).int().argmax(dim=-1)

    def encode_trimmed(self, tokens: Tensor) -> Tensor:
        """Encode ``[B, 77]`` tokens using only the first ``max(end) + 1`` positions.

        Exact for causal text towers pooling at the end token: positions after a prompt's end
        token cannot influence it.
        """
        o = self.owner
        idx = self.pool_index(tokens)
        length = int(idx.max()) + 1
        tokens = tokens[:, :length]
        cast_dtype = o.transformer.get_cast_dtype()
        x = o.token_embedding(tokens).to(cast_dtype)
        x = x + o.positional_embedding[:length].to(cast_dtype)
        x = o.transformer(x, attn_mask=o.attn_mask[:length, :length])
        x = o.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), idx]
        return self._project(x)

    def _project(self, x: Tensor) -> Tensor:
        proj = self.owner.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return x

    @property
    def can_share_prefix(self) -> bool:
        """Whether :meth:`encode_shared_prefix` applies: a causal tower pooling at the end
        token (``can_trim``) made of open_clip's standard self-attention blocks."""
        if not self.can_trim:
            return False
        from open_clip.transformer import ResidualAttentionBlock

        blocks = getattr(self.owner.transformer, "resblocks", None)
        return blocks is not None and all(
            type(b) is ResidualAttentionBlock
            and not hasattr(b, "ln_1_kv")
            and isinstance(b.attn, nn.MultiheadAttention)
            and b.attn._qkv_same_embed_dim
            and b.attn.in_proj_bias is not None
            for b in blocks
        )

    @staticmethod
    def _qkv(blk: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``[B, L, W]`` -> q, k, v as ``[B, heads, L, head_dim]`` (the block's projections)."""
        attn: Any = blk.attn
        b, n, w = x.shape
        qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
        qkv = qkv.view(b, n, 3, attn.num_heads, w // attn.num_heads).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _block(self, blk: Any, x: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """One residual attention block on ``x [B, S, W]`` whose queries attend to the given
        earlier keys/values ``[B, heads, C, head_dim]`` and then to ``x``'s own positions;
        ``mask [B or 1, 1, S, C + S]`` is additive."""
        b, s, w = x.shape
        q, k, v = self._qkv(blk, blk.ln_1(x))
        k = torch.cat([keys.expand(b, -1, -1, -1), k], dim=2)
        v = torch.cat([values.expand(b, -1, -1, -1), v], dim=2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))
        a = F.linear(
            a.transpose(1, 2).reshape(b, s, w), blk.attn.out_proj.weight, blk.attn.out_proj.bias
        )
        x = x + blk.ls_1(a)
        return x + blk.ls_2(blk.mlp(blk.ln_2(x)))

    def prefix_states(self, prefix: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Keys and values of every block for a token prefix ``[c]``: a list (one per block)
        of ``([heads, c, head_dim], [heads, c, head_dim])``."""
        o = self.owner
        c = prefix.shape[0]
        dtype = o.transformer.get_cast_dtype()
        h = o.token_embedding(prefix[None]).to(dtype) + o.positional_embedding[:c].to(dtype)
        causal = o.attn_mask[:c, :c]
        states = []
        for blk in o.transformer.resblocks:
            _, k, v = self._qkv(blk, blk.ln_1(h))
            states.append((k[0], v[0]))
            empty = k[:, :, :0]
            h = self._block(blk, h, empty, empty, causal[None, None])
        return states

    def encode_after_prefixes(
        self,
        tokens: Tensor,
        prefix_lens: Tensor,
        states: list[tuple[Tensor, Tensor]],
    ) -> Tensor:
        """Encode ``[B, 77]`` tokens given the keys/values of their first ``prefix_lens[b]``
        tokens: only the positions from there to each prompt's end token are computed.

        Exact for causal towers (a position's hidden states depend only on earlier tokens).

        Args:
            tokens: ``[B, 77]`` token ids.
            prefix_lens: ``[B]`` int64, each in ``[1, end index]``.
            states: per block, keys and values ``[B, heads, C, head_dim]`` of each row's prefix
                (positions ``>= prefix_lens[b]`` are padding, masked out).

        Returns:
            ``[B, D]`` raw (unnormalised) text embeddings.
        """
        o = self.owner
        ends = self.pool_index(tokens)
        if bool((prefix_lens < 1).any() | (prefix_lens > ends).any()):
            raise ValueError(
                f"prefix_len must be in [1, end index] for each prompt, got {prefix_lens.tolist()} "
                f"for end indices {ends.tolist()}."
            )
        dev = tokens.device
        c_max = states[0][0].shape[2] if states else 0
        s = int((ends - prefix_lens).max()) + 1
        ctx = o.positional_embedding.shape[0]
        steps = torch.arange(s, device=dev)
        pos = (prefix_lens[:, None] + steps).clamp(max=ctx - 1)  # [B, S] (beyond ends: padding)
        dtype = o.transformer.get_cast_dtype()
        x = o.token_embedding(tokens.gather(1, pos)).to(dtype) + o.positional_embedding[pos].to(
            dtype
        )
        blocked = torch.finfo(torch.float32).min
        prefix_ok = torch.arange(c_max, device=dev)[None] < prefix_lens[:, None]  # [B, C]
        mask = torch.cat(
            [
                prefix_ok[:, None, :].expand(-1, s, -1),
                (steps[None, :] <= steps[:, None])[None].expand(len(tokens), -1, -1),
            ],
            dim=2,
        )
        mask = torch.zeros(mask.shape, device=dev).masked_fill(~mask, blocked)[:, None]
        for blk, (k, v) in zip(o.transformer.resblocks, states, strict=True):
            x = self._block(blk, x, k, v, mask)
        x = o.ln_final(x)
        x = x[torch.arange(x.shape[0], device=dev), ends - prefix_lens]
        return self._project(x)

    def encode_shared_prefix(
        self, tokens: Tensor, prefix_len: int, states: list[tuple[Tensor, Tensor]] | None = None
    ) -> Tensor:
        """Encode ``[B, 77]`` tokens whose first ``prefix_len`` tokens are identical, the prefix
        computed once (``states`` from :meth:`prefix_states`, computed here when ``None``)."""
        if states is None:
            ends = self.pool_index(tokens)
            if not 1 <= prefix_len <= int(ends.min()):
                raise ValueError(f"prefix_len must be in [1, {int(ends.min())}], got {prefix_len}.")
            states = self.prefix_states(tokens[0, :prefix_len])
        b = tokens.shape[0]
        rows = [(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in states]
        lens = torch.full((b,), prefix_len, dtype=torch.long, device=tokens.device)
        return self.encode_after_prefixes(tokens, lens, rows)


class TextEncoder(nn.Module):
    """Turns a :class:`Vocabulary` into class-name embeddings with an open_clip text tower.

    Each name is put into every template; the template embeddings are L2-normalised, averaged
    and re-normalised (docs/protocols.md#text-embeddings). Prompts are encoded in batches sorted by
    length and cut to the longest prompt of the batch (exact for causal towers), which is several
    times faster than padding to the 77-token context. Results are cached in memory and, with
    ``cache_dir``, on disk, keyed by model weights + templates + names.

    Args:
        clip: the open_clip model (from :func:`~ovdense.modeling.clip.load_clip`).
        templates: a template-set name (``"openai_imagenet"``, ``"single"``, ``"name"``), one
            format string, or a list of format strings with ``{}``.
        batch_size: prompts per text-tower batch.
        cache_dir: folder for the on-disk cache (``None``: memory only). The environment variable
            ``OVDENSE_TEXT_CACHE`` sets a default.
        progress: show a progress bar when encoding more than ``batch_size`` prompts.
        share_prefix: encode the tokens that all names share at the start of a template once
            per template (exact for open_clip's causal towers, see
            :meth:`encode_template_grid`; other towers fall back to :meth:`encode_prompts`).
        min_names_for_prefix: below this many names the prompts are encoded whole (one prefix
            pass per template does not pay off for a handful of names).
    """

    def __init__(
        self,
        clip: nn.Module,
        templates: str | Sequence[str] = "openai_imagenet",
        batch_size: int = 256,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
        share_prefix: bool = True,
        min_names_for_prefix: int = 8,
    ) -> None:
        super().__init__()
        self.share_prefix = share_prefix
        if min_names_for_prefix < 1:
            raise ValueError("min_names_for_prefix must be >= 1.")
        self.min_names_for_prefix = min_names_for_prefix
        self.clip: Any = clip  # an open_clip model (untyped): encode_text is read by name
        self.templates = resolve_templates(templates)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1.")
        self.batch_size = batch_size
        env_dir = os.environ.get("OVDENSE_TEXT_CACHE")
        self.cache_dir = Path(cache_dir) if cache_dir else (Path(env_dir) if env_dir else None)
        self.progress = progress
        tokenizer = getattr(clip, "ovdense_tokenizer", None)
        if tokenizer is None:
            import open_clip

            tokenizer = open_clip.SimpleTokenizer()
        self.tokenizer: Callable[[list[str]], Tensor] = tokenizer
        self._tower = _TextTower(clip)
        self._model_id: str | None = getattr(clip, "ovdense_id", None)

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    def model_id(self) -> str:
        if self._model_id is None:
            self._model_id = model_fingerprint(self.clip)
        return self._model_id

    def cache_key(self, names: Sequence[str], per_template: bool = False) -> str:
        data: dict[str, Any] = {
            "model": self.model_id(),
            "templates": self.templates,
            "names": list(names),
        }
        if per_template:  # only then, so that the keys of averaged embeddings stay as they were
            data["per_template"] = True
        payload = json.dumps(data, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str], trim: bool = True) -> Tensor:
        """Raw (unnormalised) text embeddings ``[len(prompts), D]`` for a list of sentences.

        Args:
            trim: cut each batch to its longest prompt (exact, fast); ``False`` pads every
                prompt to the full context (the reference computation).
        """
        tokens = self.tokenizer(list(prompts))
        lengths = self._tower.pool_index(tokens) if self._tower.can_trim else None
        order = torch.argsort(lengths, stable=True) if lengths is not None else None
        out: Tensor | None = None
        n = tokens.shape[0]
        bar = tqdm(
            total=n,
            desc="Encoding prompts",
            unit="prompt",
            disable=not self.progress or n <= self.batch_size,
            leave=False,
        )
        for start in range(0, n, self.batch_size):
            sel = (
                order[start : start + self.batch_size]
                if order is not None
                else torch.arange(start, min(n, start + self.batch_size))
            )
            batch = tokens[sel].to(self.device)
            if trim and self._tower.can_trim:
                emb = self._tower.encode_trimmed(batch)
            else:
                emb = self.clip.encode_text(batch)
            if out is None:
                out = torch.empty(n, emb.shape[-1], dtype=torch.float32, device=emb.device)
            out[sel.to(emb.device)] = emb.float()
            bar.update(len(sel))
        bar.close()
        assert out is not None
        return out

    @property
    def shares_prefix(self) -> bool:
        """Whether :meth:`encode_template_grid` computes each template's shared prefix once
        (``share_prefix`` and a tower where it is exact)."""
        return self.share_prefix and self._tower.can_share_prefix

    @torch.no_grad()
    def encode_template_grid(self, names: Sequence[str]) -> Tensor:
        """Raw (unnormalised) embeddings ``[len(names), T, D]`` of every name in every template.

        With :attr:`shares_prefix`, the tokens that every name shares at the start of a
        template (``"<start> a photo of a"``) go through the tower once per template and only
        the rest of each prompt is computed (exact: the tower is causal); those rests, of all
        templates, are batched by length. Otherwise all prompts go through
        :meth:`encode_prompts`.
        """
        t = len(self.templates)
        if not self.shares_prefix or len(names) < self.min_names_for_prefix:
            prompts = [tmpl.format(name) for name in names for tmpl in self.templates]
            return self.encode_prompts(prompts).view(len(names), t, -1)
        tower, dev, n = self._tower, self.device, len(names)
        tokens = torch.cat(
            [self.tokenizer([tmpl.format(name) for name in names]) for tmpl in self.templates]
        )
        ends = tower.pool_index(tokens).view(t, n)
        same = (tokens.view(t, n, -1) == tokens.view(t, n, -1)[:, :1]).all(dim=1)  # [T, 77]
        shared = torch.where(same.all(dim=1), same.shape[1], same.int().argmin(dim=1))
        prefix = torch.minimum(shared, ends.min(dim=1).values)  # the end token stays per-name
        # each template's prefix once; keys/values padded to the longest prefix
        c_max = int(prefix.max())
        per_template = [
            tower.prefix_states(tokens[j * n, : int(prefix[j])].to(dev)) for j in range(t)
        ]
        states = [
            tuple(
                torch.stack(
                    [
                        F.pad(st[layer][i], (0, 0, 0, c_max - st[layer][i].shape[1]))
                        for st in per_template
                    ]
                )
                for i in range(2)
            )
            for layer in range(len(per_template[0]))
        ]  # per block: ([T, heads, C, head_dim], [T, heads, C, head_dim])
        # rows (template j, name i) of every template, batched by the length left to compute
        template_of = torch.arange(t).repeat_interleave(n)
        lens = prefix[template_of]
        order = torch.argsort(ends.reshape(-1) - lens, stable=True)
        out: Tensor | None = None
        bar = tqdm(
            total=n * t,
            desc="Encoding prompts",
            unit="prompt",
            disable=not self.progress or n * t <= self.batch_size,
            leave=False,
        )
        for start in range(0, n * t, self.batch_size):
            sel = order[start : start + self.batch_size]
            tj = template_of[sel].to(dev)
            emb = tower.encode_after_prefixes(
                tokens[sel].to(dev), lens[sel].to(dev), [(k[tj], v[tj]) for k, v in states]
            )
            if out is None:
                out = torch.empty(t * n, emb.shape[-1], device=emb.device)
            out[sel.to(emb.device)] = emb.float()
            bar.update(len(sel))
        bar.close()
        assert out is not None
        return out.view(t, n, -1).transpose(0, 1)

    @torch.no_grad()
    def encode_names(
        self, names: Sequence[str], use_cache: bool = True, per_template: bool = False
    ) -> Tensor:
        """``[len(names), D]`` L2-normalised template-averaged embeddings (cached), or with
        ``per_template=True`` ``[len(names), P, D]``, one L2-normalised embedding per template
        (their normalised mean is the averaged embedding)."""
        key = self.cache_key(names, per_template) if use_cache else None
        if key is not None:
            hit = self._cache_get(key, len(names))
            if hit is not None:
                return hit.to(self.device)
        emb = F.normalize(self.encode_template_grid(names), dim=-1)
        if not per_template:
            emb = F.normalize(emb.mean(dim=1), dim=-1)
        if key is not None:
            self._cache_put(key, emb)
        return emb

    def encode_names_trainable(self, names: Sequence[str]) -> Tensor:
        """``[len(names), P, D]`` L2-normalised per-template embeddings computed *with*
        gradients and without any cache, for training a text tower (e.g. CAT-Seg's fine-tuned
        attention). Prompts are cut to the longest one (exact for causal towers)."""
        t = len(self.templates)
        prompts = [tmpl.format(name) for name in names for tmpl in self.templates]
        tokens = self.tokenizer(prompts).to(self.device)
        if self._tower.can_trim:
            emb = self._tower.encode_trimmed(tokens)
        else:
            emb = self.clip.encode_text(tokens)
        return F.normalize(emb.float(), dim=-1).view(len(names), t, -1)

    def forward(
        self, vocabulary: Vocabulary | Sequence[str | Sequence[str]], per_template: bool = False
    ) -> ClassEmbeddings:
        """Embed every name of a vocabulary: see :class:`ClassEmbeddings` (``per_template``:
        also fill ``template_embeds``)."""
        vocab = Vocabulary.coerce(vocabulary)
        if per_template:
            per_t = self.encode_names(vocab.names, per_template=True)
            embeds = F.normalize(per_t.mean(dim=1), dim=-1)
            return ClassEmbeddings(embeds, vocab.name_to_class(embeds.device), vocab, per_t)
        embeds = self.encode_names(vocab.names)
        return ClassEmbeddings(embeds, vocab.name_to_class(embeds.device), vocab)

    # -- cache ----------------------------------------------------------------------------
    def _cache_get(self, key: str, n: int) -> Tensor | None:
        if key in _MEMORY_CACHE:
            _MEMORY_CACHE.move_to_end(key)
            return _MEMORY_CACHE[key]
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{key}.pt"
        if not path.is_file():
            return None
        try:
            data = load_weights_file(path, what="Text-cache entry")
            emb = data["embeds"]
            if emb.shape[0] != n:
                return None
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed, never fatal
            return None
        self._memory_put(key, emb)
        return emb

    def _memory_put(self, key: str, emb: Tensor) -> None:
        _MEMORY_CACHE[key] = emb.detach().to("cpu")
        _MEMORY_CACHE.move_to_end(key)
        while len(_MEMORY_CACHE) > _MEMORY_CACHE_SIZE:
            _MEMORY_CACHE.popitem(last=False)

    def _cache_put(self, key: str, emb: Tensor) -> None:
        self._memory_put(key, emb)
        if self.cache_dir is None:
            return
        with atomic_write(self.cache_dir / f"{key}.pt") as tmp:
            torch.save({"embeds": emb.detach().cpu()}, tmp)

    @staticmethod
    def clear_memory_cache() -> None:
        _MEMORY_CACHE.clear()
