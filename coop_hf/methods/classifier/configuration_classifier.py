"""Configuration of a linear classifier on frozen, L2-normalised CLIP image features."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ...configuration_utils import PromptConfig, check_template
from ...data.templates import DEFAULT_TEMPLATE, templates_for

CLASSIFIER_INITS = ("random", "text")


@strict
class ClassifierConfig(PromptConfig):
    r"""Configuration of a [`LinearClassifierModel`]: a linear head W f + b on a frozen CLIP's normalised image
    features f (PTNL's Classifier-R and Classifier-C).

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the frozen backbone the head was trained on; `from_pretrained` loads it.
        classnames (`list[str]`):
            The class names in label order (one row of the head each; the pipelines' `id2label`).
        init (`str`, defaults to "random"):
            How the head starts: "random" (Classifier-R: `nn.Linear`'s default initialisation, logits W f + b) or
            "text" (Classifier-C: W the normalised text features of `template` for each class, b = 0, logits
            scaled by CLIP's logit scale, so the untrained head is zero-shot CLIP).
        template (`str`, *optional*):
            Hand-crafted prompt with `{}` for the class name, whose text features initialise the head when
            init="text". None: the dataset's zero-shot template ("a photo of a {}." for other datasets).
    """

    model_type = "linear-classifier"
    init: str = "random"
    template: str | None = None

    def __post_init__(self, **kwargs):
        self.template = self.template or DEFAULT_TEMPLATE
        super().__post_init__(**kwargs)

    def check_prompt_settings(self) -> None:
        if self.init not in CLASSIFIER_INITS:
            raise ValueError(
                f"init={self.init!r} (--init) is not supported: use one of {', '.join(map(repr, CLASSIFIER_INITS))}."
            )
        check_template(self.template)

    @classmethod
    def dataset_settings(cls, dataset: str) -> dict[str, Any]:
        """The settings whose default depends on the dataset: its zero-shot template."""
        return {"template": templates_for(dataset)}
