"""Which kind of image tower an open_clip model has (its own ViT, or a timm EVA02 trunk)."""

from __future__ import annotations

from torch import nn

__all__ = ["is_eva_tower", "is_vit_tower"]


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


def is_vit_tower(module: nn.Module | None) -> bool:
    """True for open_clip's own ``VisionTransformer`` (or a model holding one as ``.visual``)."""
    from open_clip.transformer import VisionTransformer

    return isinstance(getattr(module, "visual", module), VisionTransformer)
