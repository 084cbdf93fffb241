"""Configuration of CLAP and ZS-LP: class prototypes initialised from the zero-shot text embeddings, fitted on cached
image features."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ...configuration_utils import PromptConfig, check_augment_views, check_templates
from ...data.templates import DEFAULT_TEMPLATE, IMAGENET_TEMPLATES_SELECT, class_prompt_templates

AUGMENT_VIEWS = 20
"""The official caching: 20 augmented passes over the training images (`AdapterMethod.epochs_aumentation`)."""


def clap_templates(dataset: str) -> list[str]:
    """The official class prompts (`_get_base_text_features`): the dataset's hand-made template (CoOp's); on ImageNet
    the 7 CLIP templates followed by "a photo of a {}."."""
    if dataset == "imagenet":
        return [*IMAGENET_TEMPLATES_SELECT, DEFAULT_TEMPLATE]
    return class_prompt_templates(dataset)


@strict
class CLAPConfig(PromptConfig):
    r"""Configuration of a [`CLAPModel`] (Silva-Rodríguez et al., "A Closer Look at the Few-Shot Adaptation of Large
    Vision-Language Models", CVPR 2024): CLAP, the class-adaptive linear probe, and ZS-LP, the zero-shot initialised
    linear probe it builds on.

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the frozen backbone.
        classnames (`list[str]`):
            The class names in label order. They are also the labels (`id2label`) that pipelines report.
        templates (`list[str]`, *optional*):
            The class prompts whose raw text features, averaged, are the zero-shot prototypes. None: the reference's
            per dataset (CoOp's hand-made template; on ImageNet the 7 CLIP templates and "a photo of a {}.").
        zero_shot_constraint (`bool`, defaults to True):
            CLAP: penalise each class's squared distance to its zero-shot prototype, weighted by its multiplier (the
            class's mean zero-shot probability on its training views). False: ZS-LP, no penalty (`--method zs-lp`
            sets it).
        adaptive_multipliers (`bool`, defaults to False):
            Update the multipliers after every epoch by the augmented Lagrangian outer step (the official
            "adaptative" constraint, which none of its experiments runs). False: the multipliers stay at their
            zero-shot initialisation, as the paper's results.
        augment_views (`int`, defaults to 20):
            Augmented views of each training image cached and fitted on (the official 20 passes).
    """

    model_type = "clap"
    fitted_fields = ("fitted_classnames",)

    templates: list[str] | None = None
    zero_shot_constraint: bool = True
    adaptive_multipliers: bool = False
    augment_views: int = AUGMENT_VIEWS
    fitted_classnames: list[str] | None = None

    def __post_init__(self, **kwargs):
        self.templates = list(self.templates or [DEFAULT_TEMPLATE])
        super().__post_init__(**kwargs)

    def check_prompt_settings(self) -> None:
        check_templates(self.templates)
        check_augment_views(self.augment_views)
        if self.adaptive_multipliers and not self.zero_shot_constraint:
            raise ValueError(
                "adaptive_multipliers (--adaptive_multipliers) updates CLAP's penalty multipliers, which ZS-LP "
                "(zero_shot_constraint False) does not have: use --method clap."
            )

    @classmethod
    def dataset_settings(cls, dataset: str) -> dict[str, Any]:
        """The reference's class prompts for the dataset."""
        return {"templates": clap_templates(dataset)}
