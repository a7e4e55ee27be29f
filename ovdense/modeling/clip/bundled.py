"""Architectures and weights shipped inside the ovdense package (no network needed).

``ovdense-tiny-vit`` is a small open_clip ViT (patch 8, 64 px, 6 blocks of width 128; text tower
of width 96) registered with open_clip on import, so ``open_clip.create_model("ovdense-tiny-vit")``
works like any built-in name. Its tag ``shapes`` holds weights trained on the procedural shapes
world (:mod:`ovdense.data.synthetic`) by ``tools/train_tiny_clip.py``: a **test and demo
asset** that knows colours and shapes and nothing else::

    clip = load_clip("ovdense-tiny-vit", "shapes")
"""

from __future__ import annotations

from pathlib import Path

import open_clip

__all__ = ["ASSETS_DIR", "BUNDLED_WEIGHTS", "bundled_weights", "list_bundled"]

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"
_CONFIGS_DIR = ASSETS_DIR / "model_configs"
_WEIGHTS_DIR = ASSETS_DIR / "weights"

#: ``(model_name, tag) -> file name`` under ``ovdense/assets/weights``.
BUNDLED_WEIGHTS: dict[tuple[str, str], str] = {
    ("ovdense-tiny-vit", "shapes"): "ovdense-tiny-vit_shapes.pt",
}

if _CONFIGS_DIR not in getattr(open_clip.factory, "_MODEL_CONFIG_PATHS", []):
    open_clip.add_model_config(_CONFIGS_DIR)


def bundled_weights(model_name: str, tag: str | None) -> Path | None:
    """The shipped weight file of ``(model_name, tag)``, or None when it is not a bundled tag.

    Raises:
        FileNotFoundError: The tag is bundled but its file is missing (a broken install).
    """
    if tag is None or (model_name, tag) not in BUNDLED_WEIGHTS:
        return None
    path = _WEIGHTS_DIR / BUNDLED_WEIGHTS[(model_name, tag)]
    if not path.is_file():
        raise FileNotFoundError(
            f"The bundled weights {model_name}/{tag} should be at '{path}' but are missing; "
            "reinstall ovdense (pip install -e .) or retrain them with tools/train_tiny_clip.py."
        )
    return path


def list_bundled() -> list[tuple[str, str]]:
    """The bundled ``(model_name, tag)`` pairs."""
    return sorted(BUNDLED_WEIGHTS)
