"""Configuration of LP++: a linear probe whose class weights blend visual prototypes with text embeddings."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ...configuration_utils import PromptConfig, check_keep_epoch, check_templates
from ...data.templates import DEFAULT_TEMPLATE, class_prompt_templates


@strict
class LPPlusPlusConfig(PromptConfig):
    r"""Configuration of an [`LPPlusPlusModel`] (Huang et al., "LP++: A Surprisingly Strong Linear Probe for
    Few-Shot CLIP", CVPR 2024).

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the frozen backbone.
        classnames (`list[str]`):
            The class names in label order. They are also the labels (`id2label`) that pipelines report.
        templates (`list[str]`, *optional*):
            The class prompts of the text embeddings, each with `{}` for the class name, averaged. None: the
            reference's per dataset (CoOp's hand-made template; the 7 CLIP templates on ImageNet).
        keep_epoch (`str`, defaults to "best_validation"):
            The epoch kept: the last of best accuracy on the few-shot validation split (the reference's) or the
            last one ("last": no epoch chosen on validation).
    """

    model_type = "lp_plus_plus"
    fitted_fields = ("fitted_classnames",)

    templates: list[str] | None = None
    keep_epoch: str = "best_validation"
    fitted_classnames: list[str] | None = None

    def __post_init__(self, **kwargs):
        self.templates = list(self.templates or [DEFAULT_TEMPLATE])
        super().__post_init__(**kwargs)

    def check_prompt_settings(self) -> None:
        check_templates(self.templates)
        check_keep_epoch(self.keep_epoch)

    @classmethod
    def dataset_settings(cls, dataset: str) -> dict[str, Any]:
        """The reference's template(s) for the dataset."""
        return {"templates": class_prompt_templates(dataset)}
