"""Configuration of a fine-tuned CLIP text encoder on hand-crafted class prompts."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ...configuration_utils import PromptConfig, check_template
from ...data.templates import DEFAULT_TEMPLATE, templates_for


@strict
class TextEncoderFineTuningConfig(PromptConfig):
    r"""Configuration of a [`TextEncoderFineTuningModel`]: CLIP's text encoder (transformer and text projection)
    fine-tuned on the prompts `template.format(class)`, the image encoder frozen (PTNL's TEnc-FT).

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the backbone whose text encoder was fine-tuned (its image encoder is used).
        classnames (`list[str]`):
            The class names in label order; each gives one prompt. They are also the pipelines' `id2label`.
        template (`str`, *optional*):
            Hand-crafted prompt with `{}` for the class name, encoded by the fine-tuned text encoder. None: the
            dataset's zero-shot template ("a photo of a {}." for other datasets).
    """

    model_type = "tenc-ft"
    template: str | None = None

    def __post_init__(self, **kwargs):
        self.template = self.template or DEFAULT_TEMPLATE
        super().__post_init__(**kwargs)

    def check_prompt_settings(self) -> None:
        check_template(self.template)

    @classmethod
    def dataset_settings(cls, dataset: str) -> dict[str, Any]:
        """The settings whose default depends on the dataset: its zero-shot template."""
        return {"template": templates_for(dataset)}
