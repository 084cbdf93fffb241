"""Configuration of CLIP-Adapter: a residual bottleneck MLP on the frozen backbone's image features."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ...configuration_utils import PromptConfig
from ...data.templates import DEFAULT_TEMPLATE, templates_for


@strict
class CLIPAdapterConfig(PromptConfig):
    r"""Configuration of a [`CLIPAdapterModel`] (Gao et al., "CLIP-Adapter: Better Vision-Language Models with
    Feature Adapters", IJCV 2023).

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the frozen backbone.
        classnames (`list[str]`):
            The class names in label order. They are also the labels (`id2label`) that pipelines report.
        reduction (`int`, defaults to 4):
            The adapter's bottleneck: image-feature dimension / reduction hidden units (the reference's 4).
        residual_ratio (`float`, defaults to 0.2):
            The blend ratio * adapter(f) + (1 - ratio) * f of the adapted and the original image features.
        template (`str`, *optional*):
            The class prompt of the frozen text features, with `{}` for the class name. None: the dataset's
            template in CoOp's table (the reference's CUSTOM_TEMPLATES), "a photo of a {}." for other datasets.
    """

    model_type = "clip_adapter"

    reduction: int = 4
    residual_ratio: float = 0.2
    template: str | None = None

    def __post_init__(self, **kwargs):
        self.template = self.template or DEFAULT_TEMPLATE
        super().__post_init__(**kwargs)

    def check_prompt_settings(self) -> None:
        if isinstance(self.reduction, bool) or not isinstance(self.reduction, int) or self.reduction < 1:
            raise ValueError(f"reduction (--reduction) must be a whole number >= 1, got {self.reduction!r}.")
        if not 0 <= self.residual_ratio <= 1:
            raise ValueError(f"residual_ratio (--residual_ratio) must be in [0, 1], got {self.residual_ratio!r}.")
        if self.template is not None and self.template.count("{}") != 1:
            raise ValueError(f"template (--template) must hold the class name once, as '{{}}': {self.template!r}.")

    @classmethod
    def dataset_settings(cls, dataset: str) -> dict[str, Any]:
        """The dataset's template in CoOp's table (the reference's CUSTOM_TEMPLATES are the same)."""
        return {"template": templates_for(dataset)}
