"""Shared test set-up: no network, deterministic CPU, tiny models."""

import os

# A test must never reach a model hub: fail fast and clearly if one tries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test, run with `-m slow`")


# A tiny open_clip ViT (patch 8, 3 blocks, width 64, 4 heads; text width 32) with random weights.
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def make_tiny_clip(seed: int = 0, **overrides):
    from ovdense.modeling.clip import load_clip

    cfg = {**TINY_CLIP_CONFIG, **overrides}
    torch.manual_seed(seed)
    clip = load_clip(config=cfg)
    # open_clip zero-initialises some parameters; make every weight random so that tests
    # see every term of every formula.
    with torch.no_grad():
        for name, p in clip.named_parameters():
            if name.endswith("logit_scale"):
                continue
            if p.ndim == 1 and ("ln" in name or "norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    clip.ovdense_id = f"tiny-test:{seed}:{sorted(overrides)}"
    return clip.eval()


@pytest.fixture(scope="session")
def tiny_clip():
    return make_tiny_clip()


@pytest.fixture(scope="session")
def tiny_clip_factory():
    """``make_tiny_clip(seed=..., **config_overrides)`` for tests needing fresh models."""
    return make_tiny_clip


@pytest.fixture(scope="session")
def tiny_clip_config():
    return TINY_CLIP_CONFIG


TINY_PRESET = """
from ovdense.config import LazyCall as L
from ovdense.modeling.clip import load_clip
from ovdense.modeling.segmentors import TrainingFreeSegmentor

model = L(TrainingFreeSegmentor)(
    clip=L(load_clip)(config={config!r}, seed=0),
    strategy={strategy!r},
    templates="single",
    short_side=40,
    window=32,
    stride=16,
)
"""


@pytest.fixture()
def tiny_preset(tmp_path):
    """Write a preset file building a tiny random segmentor; returns a function of the
    strategy name giving the file's path."""

    def write(strategy: str = "naclip"):
        path = tmp_path / f"tiny_{strategy}.py"
        path.write_text(TINY_PRESET.format(config=TINY_CLIP_CONFIG, strategy=strategy))
        return path

    return write
