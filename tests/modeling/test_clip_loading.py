"""load_clip: every weight source, and clear errors when a source is unusable."""

import json

import open_clip
import pytest
import torch

from ovdense.modeling.clip import WeightsUnavailableError, load_clip


@pytest.fixture()
def registered_tiny(tmp_path, tiny_clip_config):
    """Register the tiny architecture under a name, as a user's open_clip JSON config."""
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    (cfg_dir / "ovdense-test-tiny.json").write_text(json.dumps(tiny_clip_config))
    open_clip.add_model_config(cfg_dir)
    return "ovdense-test-tiny"


def test_from_config_is_random_and_identified(tiny_clip_config):
    a = load_clip(config=tiny_clip_config)
    assert isinstance(a, open_clip.CLIP) and not a.training
    assert a.ovdense_id.startswith("config:")
    assert a.ovdense_tokenizer(["a cat"]).shape == (1, 77)


def test_from_object_keeps_the_model(tiny_clip):
    same = load_clip(model=tiny_clip)
    assert same is tiny_clip


def test_from_local_checkpoint(tmp_path, registered_tiny, tiny_clip_factory):
    src = tiny_clip_factory(seed=7)
    path = tmp_path / "tiny.pt"
    torch.save(src.state_dict(), path)
    loaded = load_clip(registered_tiny, checkpoint=path)
    for (k, v), (k2, v2) in zip(src.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert str(path.resolve()) in loaded.ovdense_id
    # wrapped {"state_dict": ...} with a DistributedDataParallel "module." prefix also loads
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, wrapped)
    again = load_clip(registered_tiny, checkpoint=wrapped)
    assert torch.equal(again.visual.proj, src.visual.proj)


def test_checkpoint_errors(tmp_path, registered_tiny, tiny_clip_factory):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_clip(registered_tiny, checkpoint=tmp_path / "missing.pt")
    src = tiny_clip_factory(seed=1)
    good = tmp_path / "good.pt"
    torch.save(src.state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises((ValueError, RuntimeError), match="truncated.pt"):
        load_clip(registered_tiny, checkpoint=truncated)
    with pytest.raises(ValueError, match="does not match") as err:
        load_clip("ViT-S-32", checkpoint=good)
    # the sizes in the file name the architecture that fits it
    assert f"it fits {registered_tiny}" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(IsADirectoryError, match="is a folder; pass the file itself"):
        load_clip(registered_tiny, checkpoint=tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises(ValueError, match="notes.txt: the file is truncated or not a checkpoint"):
        load_clip(registered_tiny, checkpoint=text)


def test_unknown_names_suggest(registered_tiny):
    with pytest.raises(KeyError, match="Did you mean 'ViT-B-16'"):
        load_clip("ViT-B-61", "openai")
    with pytest.raises(KeyError, match="Did you mean 'openai'"):
        load_clip("ViT-B-16", "opnai")


def test_offline_download_is_one_clear_sentence(monkeypatch):
    # The real thing: HF_HUB_OFFLINE=1 (set in conftest) makes the hub refuse at once.
    with pytest.raises(WeightsUnavailableError) as err:
        load_clip("ViT-B-16", "openai")
    msg = str(err.value)
    assert "checkpoint=" in msg and "offline" in msg and "\n" not in msg
    # the config overrides it names are a valid pair (one weight source)
    assert "override model.clip.checkpoint=FILE" in msg and "pretrained=None" not in msg

    def no_network(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(open_clip, "create_model", no_network)
    with pytest.raises(WeightsUnavailableError, match="checkpoint="):
        load_clip("ViT-B-16", "laion2b_s34b_b88k")


def test_two_sources_rejected(tiny_clip):
    with pytest.raises(ValueError, match="one weight source"):
        load_clip("ViT-B-16", "openai", model=tiny_clip)


def test_unreachable_hub_fails_fast_without_retries(monkeypatch):
    import socket

    calls = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(WeightsUnavailableError, match="huggingface.co unreachable"):
        load_clip("ViT-B-16", "laion2b_s34b_b88k")
    assert calls and calls[0][0][1] == 443


def test_seeded_random_models_are_identical(tiny_clip_config):
    state = torch.random.get_rng_state()
    a = load_clip(config=tiny_clip_config, seed=3)
    b = load_clip(config=tiny_clip_config, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = load_clip(config=tiny_clip_config, seed=4)
    assert not torch.equal(a.visual.conv1.weight, c.visual.conv1.weight)


def test_config_from_a_config_system_is_read_as_plain_python(tiny_clip_config):
    """An architecture given through OmegaConf (a LazyConfig's ``config={...}``, nested
    DictConfig / ListConfig) builds the same model as the plain dict."""
    from omegaconf import OmegaConf

    node = OmegaConf.create(tiny_clip_config)
    a = load_clip(config=node, seed=2)
    b = load_clip(config=tiny_clip_config, seed=2)
    assert a.ovdense_id == b.ovdense_id
    assert OmegaConf.to_container(node) == tiny_clip_config  # the caller's config untouched
