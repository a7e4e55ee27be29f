"""Vocabulary parsing, templates and the text encoder (trimmed batching, cache)."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from ovdense.modeling.text import TEMPLATE_SETS, TextEncoder, Vocabulary, resolve_templates
from ovdense.modeling.text.encoder import _MEMORY_CACHE


def test_vocabulary_synonyms_and_indices():
    v = Vocabulary(["cat", "sofa, couch", ["tv", "monitor", "screen"]])
    assert v.classes == (("cat",), ("sofa", "couch"), ("tv", "monitor", "screen"))
    assert v.names == ["cat", "sofa", "couch", "tv", "monitor", "screen"]
    assert v.display_names == ["cat", "sofa", "tv"]
    assert v.name_to_class().tolist() == [0, 1, 1, 2, 2, 2]


def test_vocabulary_parsing_rules_of_the_literature():
    line = "building, edifice"
    assert Vocabulary([line], synonym_sep=", ").classes == (("building", "edifice"),)
    # ClearCLIP splits on "," and keeps the leading space of the second name
    assert Vocabulary([line], synonym_sep=",", strip=False).classes == (("building", " edifice"),)
    # ProxyCLIP splits on "; " only: one name containing a comma
    assert Vocabulary([line], synonym_sep="; ").classes == (("building, edifice",),)


def test_vocabulary_parse_cli_and_non_ascii():
    v = Vocabulary.parse("chat,狗,sofa|couch, café ")
    assert v.classes == (("chat",), ("狗",), ("sofa", "couch"), ("café",))


def test_vocabulary_errors():
    with pytest.raises(ValueError, match="empty"):
        Vocabulary([])
    with pytest.raises(ValueError, match="Duplicated class"):
        Vocabulary(["cat", "dog", "cat"])
    with pytest.raises(ValueError, match="empty name"):
        Vocabulary(["cat", " "])
    with pytest.raises(ValueError, match="repeats"):
        Vocabulary(["sofa, sofa"])
    with pytest.raises(TypeError, match="Vocabulary.parse"):
        Vocabulary("cat,dog")
    with pytest.warns(UserWarning, match="more than one class"):
        Vocabulary(["bed, cot", "crib, cot"])


def test_vocabulary_from_file(tmp_path):
    p = tmp_path / "cls.txt"
    p.write_text("background; sky; wall\naeroplane\n\nperson, people\n", encoding="utf-8")
    v = Vocabulary.from_file(p, synonym_sep="; ")
    assert v.classes == (("background", "sky", "wall"), ("aeroplane",), ("person, people",))
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        Vocabulary.from_file(tmp_path / "nope.txt")


def test_templates():
    assert len(TEMPLATE_SETS["openai_imagenet"]) == 80
    assert TEMPLATE_SETS["openai_imagenet"][0] == "a bad photo of a {}."
    assert resolve_templates("single") == ("a photo of a {}.",)
    assert resolve_templates("a drawing of {}") == ("a drawing of {}",)
    with pytest.raises(ValueError, match="Did you mean 'single'"):
        resolve_templates("singel")
    with pytest.raises(ValueError, match="exactly one"):
        resolve_templates(["no placeholder"])


def test_trimmed_encoding_equals_full_context(tiny_clip):
    enc = TextEncoder(tiny_clip, templates="single", batch_size=3)
    assert enc._tower.can_trim
    prompts = [
        "a photo of a cat.",
        "dog",
        "a very long prompt about a red sofa in a living room",
        "x",
        "une photo d'un chien café",
        "狗",
        "a b c d e f g",
    ]
    with torch.no_grad():
        trimmed = enc.encode_prompts(prompts)
        full = tiny_clip.encode_text(enc.tokenizer(prompts))
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)


def test_class_embeddings_are_template_averages(tiny_clip):
    TextEncoder.clear_memory_cache()
    templates = ["a photo of a {}.", "a drawing of the {}", "{}"]
    enc = TextEncoder(tiny_clip, templates=templates)
    out = enc(["cat", "sofa, couch"])
    with torch.no_grad():
        ref = []
        for name in ["cat", "sofa", "couch"]:
            e = tiny_clip.encode_text(enc.tokenizer([t.format(name) for t in templates]))
            ref.append(F.normalize(F.normalize(e, dim=-1).mean(0), dim=-1))
    torch.testing.assert_close(out.embeds, torch.stack(ref), atol=1e-5, rtol=1e-5)
    assert out.name_to_class.tolist() == [0, 1, 1]


def test_memory_and_disk_cache(tiny_clip, tmp_path):
    TextEncoder.clear_memory_cache()
    enc = TextEncoder(tiny_clip, templates="single", cache_dir=tmp_path)
    first = enc.encode_names(["cat", "dog"])
    assert len(list(tmp_path.glob("*.pt"))) == 1
    key = enc.cache_key(["cat", "dog"])
    assert key in _MEMORY_CACHE
    # a fresh process would only have the disk: clear memory, poison the model, read from disk
    TextEncoder.clear_memory_cache()
    enc2 = TextEncoder(tiny_clip, templates="single", cache_dir=tmp_path)
    enc2.encode_prompts = None  # any recomputation would fail
    second = enc2.encode_names(["cat", "dog"])
    torch.testing.assert_close(first, second)
    # different templates / names / model -> different keys
    assert TextEncoder(tiny_clip, templates="name").cache_key(["cat", "dog"]) != key
    assert enc.cache_key(["dog", "cat"]) != key
    # a damaged cache file is recomputed, not fatal
    TextEncoder.clear_memory_cache()
    (tmp_path / f"{key}.pt").write_bytes(b"garbage")
    torch.testing.assert_close(
        TextEncoder(tiny_clip, templates="single", cache_dir=tmp_path).encode_names(["cat", "dog"]),
        first,
    )


def test_many_classes_with_progress(tiny_clip):
    TextEncoder.clear_memory_cache()
    names = [f"class number {i}" for i in range(300)]
    enc = TextEncoder(tiny_clip, templates="name", batch_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = enc(names)
    assert out.embeds.shape == (300, 32)
    ref = F.normalize(tiny_clip.encode_text(enc.tokenizer(names[:5])), dim=-1)
    torch.testing.assert_close(out.embeds[:5], ref.detach(), atol=1e-5, rtol=1e-5)


def test_classes_sharing_a_first_name_are_distinct_classes():
    with pytest.warns(UserWarning, match="more than one class"):
        v = Vocabulary(["bag", "bag, traveling bag", "cat"])
    assert v.display_names == ["bag", "bag (class 1)", "cat"]
    with pytest.raises(ValueError, match="Duplicated class"):
        Vocabulary(["bag, sack", "cat", "bag, sack"])


# -- prefix-shared encoding (each template's common start computed once) ---------------------

PREFIX_NAMES = [
    "cat",
    "red circle",
    "red square",  # shares "red" with the previous name: a longer common prefix is exact too
    "a very long class name about a sofa in a living room",
    "狗",
    "café",
    "x",
    "tv monitor",
    "person",
]


def _reference_grid(clip, enc, names):
    """Every prompt through the full 77-token context (open_clip's own forward pass)."""
    prompts = [t.format(n) for n in names for t in enc.templates]
    with torch.no_grad():
        return clip.encode_text(enc.tokenizer(prompts)).view(len(names), len(enc.templates), -1)


@pytest.mark.parametrize(
    "templates",
    [
        "openai_imagenet",
        "single",
        "name",  # the prefix is the start token alone
        ["{} in a photo", "a photo of {}", "itap of a {}.", "{}"],
    ],
)
def test_prefix_shared_grid_equals_full_context(tiny_clip, templates):
    names = PREFIX_NAMES
    enc = TextEncoder(tiny_clip, templates=templates, batch_size=4, progress=False)
    assert enc.shares_prefix and len(names) >= enc.min_names_for_prefix
    grid = enc.encode_template_grid(names)
    ref = _reference_grid(tiny_clip, enc, names)
    diff = (F.normalize(grid, dim=-1) - F.normalize(ref, dim=-1)).abs().max()
    assert diff <= 1e-6, diff
    plain = TextEncoder(tiny_clip, templates=templates, share_prefix=False, progress=False)
    torch.testing.assert_close(
        enc.encode_names(names, use_cache=False),
        plain.encode_names(names, use_cache=False),
        atol=1e-6,
        rtol=0,
    )


def test_prefix_sharing_with_layer_scale_and_quick_gelu(tiny_clip_factory, tiny_clip_config):
    text_cfg = {**tiny_clip_config["text_cfg"], "layers": 3, "ls_init_value": 0.5}
    clip = tiny_clip_factory(seed=3, quick_gelu=True, text_cfg=text_cfg)
    enc = TextEncoder(clip, templates="openai_imagenet", progress=False)
    assert enc.shares_prefix
    names = PREFIX_NAMES[:8]
    grid = enc.encode_template_grid(names)
    ref = _reference_grid(clip, enc, names)
    assert (F.normalize(grid, dim=-1) - F.normalize(ref, dim=-1)).abs().max() <= 1e-6


def test_prefix_shared_states_are_the_prefix_positions(tiny_clip):
    """The shared part's keys/values are those the full forward pass computes there."""
    enc = TextEncoder(tiny_clip, templates="single", progress=False)
    tower = enc._tower
    tokens = enc.tokenizer(["a photo of a cat."])
    states = tower.prefix_states(tokens[0, :5])
    o = tower.owner
    with torch.no_grad():
        x = o.token_embedding(tokens[:, :5]) + o.positional_embedding[:5]
        for blk, (k, v) in zip(o.transformer.resblocks, states, strict=True):
            h = blk.ln_1(x)
            w = blk.attn.in_proj_weight
            b = blk.attn.in_proj_bias
            d = h.shape[-1]
            k_ref = F.linear(h, w[d : 2 * d], b[d : 2 * d])
            v_ref = F.linear(h, w[2 * d :], b[2 * d :])
            heads = blk.attn.num_heads
            torch.testing.assert_close(k, k_ref[0].view(5, heads, -1).transpose(0, 1))
            torch.testing.assert_close(v, v_ref[0].view(5, heads, -1).transpose(0, 1))
            x = blk(x, attn_mask=o.attn_mask[:5, :5])


def test_prefix_sharing_falls_back_where_it_is_not_exact(tiny_clip, tiny_clip_factory):
    few = TextEncoder(tiny_clip, templates="single", progress=False)
    # few names: all templates batched together instead (the same numbers)
    names = PREFIX_NAMES[:3]
    torch.testing.assert_close(
        few.encode_template_grid(names), _reference_grid(tiny_clip, few, names), atol=1e-5, rtol=0
    )
    # a bidirectional text tower (no causal mask): the prefix is not shared
    clip = tiny_clip_factory(seed=1)
    clip.attn_mask = None
    enc = TextEncoder(clip, templates="single", progress=False)
    assert not enc._tower.can_share_prefix and not enc.shares_prefix
    with pytest.raises(ValueError, match="prefix_len"):
        TextEncoder(tiny_clip, templates="single")._tower.encode_shared_prefix(
            few.tokenizer(["a cat", "a dog"]),
            4,  # beyond the end token at position 3
        )
    with pytest.raises(ValueError, match="min_names_for_prefix"):
        TextEncoder(tiny_clip, min_names_for_prefix=0)
