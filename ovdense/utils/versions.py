"""Minimum versions of ovdense's dependencies: one source of truth, checked on import.

``MINIMUM_VERSIONS`` is read by ``setup.py`` (which ``exec``s this file, so it must stay
standard-library only) to write ``install_requires``, and by :func:`check_dependency_versions`,
which ``import ovdense`` calls so that an environment with a too-old ``open_clip_torch`` or
``timm`` fails with one clear sentence instead of a misleading error later on.

How every bound was found (and what breaks below it): ``docs/dependencies.md``; re-check them
with ``python tools/check_min_deps.py``.
"""

from __future__ import annotations

import os
import re
from importlib import metadata

__all__ = ["CHECKED_AT_IMPORT", "MINIMUM_VERSIONS", "check_dependency_versions", "requirements"]

#: Distribution name (as on PyPI) -> lowest version that ovdense's test suite passes with
#: (torch / torchvision: derived from the APIs used, see docs/dependencies.md).
MINIMUM_VERSIONS: dict[str, str] = {
    "torch": "2.3",  # torch.amp.GradScaler(device) (2.3); derived from the APIs used, not run
    "torchvision": "0.18",  # the torchvision release paired with torch 2.3
    "open_clip_torch": "3.0.0",  # create_model(weights_only=...); 2.24-2.32 pass it to CLIP()
    "timm": "1.0.31",  # EVA02 towers: EvaAttention.head_dim (1.0.26), RoPE _build_embed_cat
    "segment-anything": "1.0",  # the only release
    "opencv-python-headless": "4.8.0.76",
    "pycocotools": "2.0.7",
    "numpy": "1.24",
    "pillow": "10.3",  # 16-bit PNG labels read back as I;16 (10.0-10.2: mode I)
    "omegaconf": "2.3",
    "tqdm": "4.65",
    "scipy": "1.15.2",  # loadmat of a truncated .mat raises MatReadError, not IndexError
}

#: Dependencies whose version ``import ovdense`` checks (cheap: package metadata, no import).
CHECKED_AT_IMPORT: tuple[str, ...] = ("open_clip_torch", "timm")

#: Set to 1 to skip the import-time check (e.g. a source checkout of open_clip without metadata).
SKIP_ENV = "OVDENSE_SKIP_VERSION_CHECK"


def requirements() -> list[str]:
    """``install_requires`` entries: ``"name>=minimum"`` for every dependency."""
    return [f"{name}>={version}" for name, version in MINIMUM_VERSIONS.items()]


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``"2.4.0+cu121"`` -> ``(2, 4, 0)``,
    ``"3.0.0rc1"`` -> ``(3, 0, 0)``; trailing zeros dropped so ``"3.0"`` equals ``"3.0.0"``."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    if match is None:
        return ()
    parts = [int(p) for p in match.group(1).split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_dependency_versions(names: tuple[str, ...] = CHECKED_AT_IMPORT) -> None:
    """Raise ImportError naming the fix when an installed dependency is older than its minimum.

    A dependency without package metadata (not installed, or a bare source checkout) and an
    unparsable version are let through; set ``OVDENSE_SKIP_VERSION_CHECK=1`` to skip the check.

    Raises:
        ImportError: ``ovdense needs open_clip_torch>=3.0.0 (found 2.32.0): pip install -U
            'open_clip_torch>=3.0.0'``.
    """
    if os.environ.get(SKIP_ENV, "").lower() in ("1", "true", "yes", "on"):
        return
    for name in names:
        found = _installed_version(name)
        if found is None or not _release(found):
            continue
        minimum = MINIMUM_VERSIONS[name]
        if _release(found) < _release(minimum):
            raise ImportError(
                f"ovdense needs {name}>={minimum} (found {found}): "
                f"pip install -U '{name}>={minimum}'"
            )
