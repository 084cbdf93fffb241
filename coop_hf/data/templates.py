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

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
)
"""The 60 ImageNet prompt templates of CLIP's prompt-engineering notebook, as PromptSRC averages them for its
frozen text features (its `trainers/imagenet_templates.py`)."""


def templates_for(name: str) -> str:
    """Return the hand-made template of benchmark ``name``, or ``DEFAULT_TEMPLATE`` for any other name."""
    return BENCHMARK_TEMPLATES.get(name, DEFAULT_TEMPLATE)


def class_prompt_templates(name: str) -> list[str]:
    """The class prompts Tip-Adapter and LP++ average: the 7 CLIP templates on ImageNet, the benchmark's hand-made
    template elsewhere (their `datasets/*.py`)."""
    return list(IMAGENET_TEMPLATES_SELECT) if name == "imagenet" else [templates_for(name)]


def ensemble_templates(name: str) -> list[str]:
    """Templates for prompt ensembling as in the reference: the 7 ImageNet templates plus the dataset's own.

    The dataset template is not added for ``imagenet`` itself, as in the reference zero-shot ensemble.
    """
    templates = list(IMAGENET_TEMPLATES_SELECT)
    if name != "imagenet":
        templates.append(templates_for(name))
    return templates
