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
    """

    embeds: Tensor
    name_to_class: Tensor
    vocabulary: Vocabulary

    @property
    def num_classes(self) -> int:
        return self.vocabulary.num_classes

    def to(self, device: torch.device | str) -> ClassEmbeddings:
        return ClassEmbeddings(
            self.embeds.to(device), self.name_to_class.to(device), self.vocabulary
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
        proj = o.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return x


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
    """

    def __init__(
        self,
        clip: nn.Module,
        templates: str | Sequence[str] = "openai_imagenet",
        batch_size: int = 256,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
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

    def cache_key(self, names: Sequence[str]) -> str:
        payload = json.dumps(
            {"model": self.model_id(), "templates": self.templates, "names": list(names)},
            ensure_ascii=False,
        )
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

    @torch.no_grad()
    def encode_names(self, names: Sequence[str], use_cache: bool = True) -> Tensor:
        """``[len(names), D]`` L2-normalised template-averaged embeddings (cached)."""
        key = self.cache_key(names) if use_cache else None
        if key is not None:
            hit = self._cache_get(key, len(names))
            if hit is not None:
                return hit.to(self.device)
        t = len(self.templates)
        prompts = [tmpl.format(name) for name in names for tmpl in self.templates]
        emb = F.normalize(self.encode_prompts(prompts), dim=-1).view(len(names), t, -1)
        emb = F.normalize(emb.mean(dim=1), dim=-1)
        if key is not None:
            self._cache_put(key, emb)
        return emb

    def forward(self, vocabulary: Vocabulary | Sequence[str | Sequence[str]]) -> ClassEmbeddings:
        """Embed every name of a vocabulary: see :class:`ClassEmbeddings`."""
        vocab = Vocabulary.coerce(vocabulary)
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
