"""Prompt template sets: how a class name is put into sentences for the text tower."""

from __future__ import annotations

from collections.abc import Sequence

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from ...utils.registry import unknown_name_message

__all__ = ["TEMPLATE_SETS", "resolve_templates"]

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    # The 80 prompts of CLIP's ImageNet evaluation, as shipped in open_clip; used by SCLIP,
    # NACLIP, ClearCLIP, ProxyCLIP and MaskCLIP.
    "openai_imagenet": tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES),
    "single": ("a photo of a {}.",),
    "name": ("{}",),
    # CAT-Seg's one prompt (its ViT-B/16 and ViT-L/14 configs, "single" ensemble there)
    "catseg": ("A photo of a {} in the scene",),
    # The caption styles of the shapes world (ovdense.data.synthetic), for its tiny CLIP.
    "shapes": ("a photo of a {}.", "a {}.", "an image with a {}."),
}


def resolve_templates(templates: str | Sequence[str]) -> tuple[str, ...]:
    """A template-set name, or a list of format strings each containing ``{}`` exactly once."""
    if isinstance(templates, str):
        if "{}" in templates:
            out: tuple[str, ...] = (templates,)
        elif templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[templates]
        else:
            raise ValueError(unknown_name_message("template set", templates, list(TEMPLATE_SETS)))
    else:
        out = tuple(templates)
    if not out:
        raise ValueError("The template list is empty; give at least one, e.g. 'a photo of a {}.'.")
    for t in out:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ValueError(f"Each template needs exactly one '{{}}' for the class name: {t!r}.")
    return out
