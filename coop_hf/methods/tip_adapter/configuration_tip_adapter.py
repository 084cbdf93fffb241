"""Configuration of Tip-Adapter and Tip-Adapter-F: a cache of the few-shot images' features beside zero-shot CLIP."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ...configuration_utils import PromptConfig, check_augment_views, check_keep_epoch, check_templates
from ...data.templates import DEFAULT_TEMPLATE, class_prompt_templates

# The reference's configs/<dataset>.yaml: (search_scale [beta, alpha], init_beta, init_alpha); search_step is
# [200, 20] everywhere.
REFERENCE_SEARCH: dict[str, tuple[tuple[float, float], float, float]] = {
    "caltech101": ((12, 5), 1, 3),
    "dtd": ((13, 13), 1, 2),
    "eurosat": ((12, 10), 1, 2),
    "fgvc_aircraft": ((30, 30), 1, 5),
    "food101": ((10, 10), 1, 1.17),
    "imagenet": ((7, 3), 1, 1.17),
    "oxford_flowers": ((50, 50), 1, 10),
    "oxford_pets": ((7, 3), 1, 1.17),
    "stanford_cars": ((20, 10), 1, 3),
    "sun397": ((12, 10), 1, 1.17),
    "ucf101": ((7, 3), 1, 3),
}
SEARCH_STEPS = [200, 20]
TIP_ADAPTER_CROP_SCALE = (0.5, 1.0)
"""The reference's augmentation of the cache images: RandomResizedCrop(scale=(0.5, 1)) and a horizontal flip."""


@strict
class TipAdapterConfig(PromptConfig):
    r"""Configuration of a [`TipAdapterModel`] (Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for
    Few-shot Classification", ECCV 2022).

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the frozen backbone.
        classnames (`list[str]`):
            The class names in label order. They are also the labels (`id2label`) that pipelines report.
        templates (`list[str]`, *optional*):
            The class prompts of the zero-shot classifier, each with `{}` for the class name, averaged. None: the
            reference's per dataset (CoOp's hand-made template; the 7 CLIP templates on ImageNet).
        augment_views (`int`, defaults to 10):
            Augmented views of each training image averaged into its cache key (the reference's augment_epoch).
        fine_tune (`bool`, defaults to False):
            Tip-Adapter-F: fine-tune the cache keys (`--method tip-adapter-f` sets it).
        init_alpha (`float`, *optional*):
            The residual ratio alpha of the cache logits while fine-tuning (and before the search). None: the
            reference's per dataset (1.17 elsewhere).
        init_beta (`float`, *optional*):
            The sharpness beta of the affinities while fine-tuning. None: the reference's (1).
        search_scale (`list[float]`, *optional*):
            The largest [beta, alpha] of the validation grid search. None: the reference's per dataset ([7, 3]
            elsewhere).
        search_steps (`list[int]`, defaults to [200, 20]):
            Grid points of [beta, alpha] in the search, from 0.1 up to below the scale; [0, 0] keeps init_beta and
            init_alpha (no search).
        keep_epoch (`str`, defaults to "best_validation"):
            Tip-Adapter-F: the fine-tuning epoch kept, that of the best accuracy on the validation split (the
            reference selects on the test split) or the last one ("last": no epoch chosen on validation).
    """

    model_type = "tip_adapter"
    fitted_fields = ("fitted_classnames",)

    templates: list[str] | None = None
    augment_views: int = 10
    fine_tune: bool = False
    init_alpha: float | None = None
    init_beta: float | None = None
    search_scale: list[float] | None = None
    search_steps: list[int] | None = None
    keep_epoch: str = "best_validation"
    fitted_classnames: list[str] | None = None

    def __post_init__(self, **kwargs):
        scale, beta, alpha = REFERENCE_SEARCH["imagenet"]
        self.templates = list(self.templates or [DEFAULT_TEMPLATE])
        self.init_alpha = alpha if self.init_alpha is None else self.init_alpha
        self.init_beta = beta if self.init_beta is None else self.init_beta
        self.search_scale = list(scale if self.search_scale is None else self.search_scale)
        self.search_steps = list(SEARCH_STEPS if self.search_steps is None else self.search_steps)
        super().__post_init__(**kwargs)

    def check_prompt_settings(self) -> None:
        check_templates(self.templates)
        check_keep_epoch(self.keep_epoch)
        check_augment_views(self.augment_views)
        if len(self.search_scale) != 2 or min(self.search_scale) <= 0.1:
            raise ValueError(
                f"search_scale (--search_scale BETA ALPHA) must be two numbers above 0.1, got {self.search_scale}."
            )
        if (
            len(self.search_steps) != 2
            or min(self.search_steps) < 0
            or (0 in self.search_steps) != (max(self.search_steps) == 0)
        ):
            raise ValueError(
                "search_steps (--search_steps BETA ALPHA) must be two whole numbers >= 1, or 0 0 for no search; got "
                f"{self.search_steps}."
            )

    @classmethod
    def dataset_settings(cls, dataset: str) -> dict[str, Any]:
        """The reference's template(s) and search configuration for the dataset."""
        templates = class_prompt_templates(dataset)
        scale, beta, alpha = REFERENCE_SEARCH.get(dataset, REFERENCE_SEARCH["imagenet"])
        return {"templates": templates, "search_scale": list(scale), "init_beta": beta, "init_alpha": alpha}
