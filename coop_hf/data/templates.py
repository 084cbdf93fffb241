"""Hand-made zero-shot prompt templates used by the CoOp/CLIP reference code."""

from __future__ import annotations

DEFAULT_TEMPLATE = "a photo of a {}."
"""Template for datasets without a hand-made one (CLIP's plain ImageNet prompt)."""

BENCHMARK_TEMPLATES: dict[str, str] = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "stanford_cars": DEFAULT_TEMPLATE,
    "food101": "a photo of {}, a type of food.",
    "sun397": DEFAULT_TEMPLATE,
    "caltech101": DEFAULT_TEMPLATE,
    "ucf101": "a photo of a person doing {}.",
    "imagenet": DEFAULT_TEMPLATE,
    "imagenet_v2": DEFAULT_TEMPLATE,
    "imagenet_sketch": DEFAULT_TEMPLATE,
    "imagenet_a": DEFAULT_TEMPLATE,
    "imagenet_r": DEFAULT_TEMPLATE,
}
"""Per-benchmark hand-made template, keyed by the reference config name."""

IMAGENET_TEMPLATES_SELECT: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
"""The 7 ImageNet templates CLIP selected and CoOp uses for prompt ensembling."""


def templates_for(name: str) -> str:
    """Return the hand-made template of benchmark ``name``, or ``DEFAULT_TEMPLATE`` for any other name."""
    return BENCHMARK_TEMPLATES.get(name, DEFAULT_TEMPLATE)


def ensemble_templates(name: str) -> list[str]:
    """Templates for prompt ensembling as in the reference: the 7 ImageNet templates plus the dataset's own.

    The dataset template is not added for ``imagenet`` itself, as in the reference zero-shot ensemble.
    """
    templates = list(IMAGENET_TEMPLATES_SELECT)
    if name != "imagenet":
        templates.append(templates_for(name))
    return templates
