"""The papers' published accuracies, which the few-shot study's tables show beside the measured ones.

A figure applies to a cell when the backbone is the paper's (OpenAI's weights, by any of the names that load them:
`openai/clip-vit-base-patch32`, `open_clip:RN50/openai`, `hf-hub:timm/resnet50_clip.openai`, ...), the dataset,
method and shot count are the paper's, and the method ran as published, under the papers' protocol: no prompt
setting given away from its few-shot defaults (`runs_as_published`), and for CoOp's figures 16 context vectors,
the class name at the end, one context for all classes. With random weights or another checkpoint nothing is
shown. The figures are those of the method reference the project works from (`docs/reproducing.md`, "Published
numbers").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

COOP_PAPER = "Zhou et al., Learning to Prompt for Vision-Language Models (CoOp), IJCV 2022"
COOP_DEFAULT = {"n_ctx": 16, "class_token_position": "end", "class_specific_context": False}
"""The CoOp of the paper's ImageNet figures: 16 context vectors, the class name at the end, one context."""
ALL_BENCHMARKS = "the 11 few-shot benchmarks"
"""The dataset of an average over CoOp's 11 datasets (a sweep's "Average" table when it holds exactly them)."""


@dataclass(frozen=True)
class PublishedFigure:
    """A test accuracy a paper reports for one cell of a few-shot study."""

    backbone: str  # "RN50", "ViT-B/32", "ViT-B/16"
    dataset: str  # a CoOp benchmark name, or ALL_BENCHMARKS
    method: str  # "zeroshot", "linear-probe" or a --method name
    shots: int  # 0 for zero-shot CLIP
    accuracy: float
    source: str
    settings: dict[str, Any] = field(default_factory=dict)  # the prompt settings the method ran with


ZERO_SHOT_RN50 = {
    "imagenet": 58.18, "caltech101": 86.29, "oxford_pets": 85.77, "stanford_cars": 55.61, "oxford_flowers": 66.14,
    "food101": 77.31, "fgvc_aircraft": 17.28, "sun397": 58.52, "dtd": 42.32, "eurosat": 37.56, "ucf101": 61.46,
}  # fmt: skip
SIXTEEN_SHOT_VIT_B16 = {  # the 11-dataset averages as the CLIP-LoRA paper (Zanella and Ben Ayed, CVPRW 2024) collects
    "clip-lora": 82.89, "maple": 81.79, "tip-adapter-f": 81.15, "lp++": 80.32, "clip-adapter": 79.86, "coop": 79.01,
}  # fmt: skip

FIGURES: tuple[PublishedFigure, ...] = (
    *(PublishedFigure("RN50", dataset, "zeroshot", 0, value, COOP_PAPER) for dataset, value in ZERO_SHOT_RN50.items()),
    PublishedFigure("RN50", "imagenet", "linear-probe", 16, 55.87, COOP_PAPER),
    PublishedFigure("RN50", "imagenet", "coop", 16, 62.95, COOP_PAPER, COOP_DEFAULT),
    PublishedFigure("ViT-B/32", "imagenet", "coop", 16, 66.85, COOP_PAPER, COOP_DEFAULT),
    *(
        PublishedFigure("ViT-B/16", ALL_BENCHMARKS, method, 16, value, "Zanella and Ben Ayed, CVPRW 2024, Table 1")
        for method, value in SIXTEEN_SHOT_VIT_B16.items()
    ),
)

_OPENAI_NAMES = (  # (pattern of a name that loads OpenAI's weights, the paper's backbone)
    (r"openai/clip-vit-base-patch32", "ViT-B/32"),
    (r"openai/clip-vit-base-patch16", "ViT-B/16"),
    (r"open_clip:rn50(-quickgelu)?/openai|hf-hub:timm/resnet50_clip\.openai", "RN50"),
    (r"open_clip:rn101(-quickgelu)?/openai|hf-hub:timm/resnet101_clip\.openai", "RN101"),
    (r"open_clip:vit-b-32(-quickgelu)?/openai|hf-hub:timm/vit_base_patch32_clip_224\.openai", "ViT-B/32"),
    (r"open_clip:vit-b-16(-quickgelu)?/openai|hf-hub:timm/vit_base_patch16_clip_224\.openai", "ViT-B/16"),
)


def paper_backbone(model_name_or_path: str) -> str | None:
    """The papers' name of the backbone a model id loads with OpenAI's weights ("RN50", "ViT-B/32"), else None
    (another checkpoint, a local folder: its weights are unknown)."""
    name = str(model_name_or_path).strip().lower()
    return next((paper for pattern, paper in _OPENAI_NAMES if re.fullmatch(pattern, name)), None)


def runs_as_published(method: Any, experiment: Any, given: dict[str, Any]) -> bool:
    """Whether the prompt settings `given` to a method (`PromptLearning`: flags, a variant's settings) leave it at its
    few-shot defaults on the experiment's dataset, the settings its paper's figures are of."""
    defaults = method.method_settings(experiment, {}, "few_shot")
    fields = method.model_class.config_class.__dataclass_fields__
    return all(value == defaults.get(key, fields[key].default) for key, value in given.items())


def published_accuracy(
    model_name_or_path: str, dataset: str, method: str, shots: int, settings: dict[str, Any] | None = None
) -> PublishedFigure | None:
    """The published figure of a cell: the backbone `model_name_or_path` loads, the dataset, the method (its
    --method name) and shot count, and the prompt settings it ran with (`settings`, which must hold the figure's)."""
    backbone, settings = paper_backbone(model_name_or_path), settings or {}
    for figure in FIGURES:
        if (figure.backbone, figure.dataset, figure.method, figure.shots) != (backbone, dataset, method, shots):
            continue
        if all(settings.get(key) == value for key, value in figure.settings.items()):
            return figure
    return None
