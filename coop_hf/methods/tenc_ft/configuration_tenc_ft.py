"""Configuration of a fine-tuned CLIP text encoder on hand-crafted class prompts."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig

from ...data.templates import DEFAULT_TEMPLATE, templates_for
from ..coop.configuration_coop import NOT_PROMPT_SETTINGS, check_classnames
from ..kgcoop.configuration_kgcoop import check_template


@strict
class TextEncoderFineTuningConfig(PretrainedConfig):
    r"""Configuration of a [`TextEncoderFineTuningModel`]: CLIP's text encoder (transformer and text projection)
    fine-tuned on the prompts `template.format(class)`, the image encoder frozen (PTNL's TEnc-FT).

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the `CLIPModel` whose text encoder was fine-tuned (its image encoder is used).
        classnames (`list[str]`):
            The class names in label order; each gives one prompt. They are also the pipelines' `id2label`.
        template (`str`, *optional*):
            Hand-crafted prompt with `{}` for the class name, encoded by the fine-tuned text encoder. None: the
            dataset's zero-shot template ("a photo of a {}." for other datasets).
    """

    model_type = "tenc-ft"
    keys_to_ignore_at_inference = ["image_embeds", "text_embeds"]

    base_model_name_or_path: str | None = None
    classnames: list[str] | None = None
    template: str | None = None

    def __post_init__(self, **kwargs):
        kwargs.pop("num_labels", None)
        if self.classnames is not None:
            check_classnames(self.classnames)
            self.classnames = list(self.classnames)
        self.template = self.template or DEFAULT_TEMPLATE
        check_template(self.template)
        self.id2label = dict(enumerate(self.classnames or []))
        self.label2id = {name: index for index, name in self.id2label.items()}
        super().__post_init__(**kwargs)

    @classmethod
    def prompt_settings(cls) -> tuple[str, ...]:
        """Names of this config's own settings: what `from_clip` takes and the command line sets."""
        skipped = {*PretrainedConfig.__dataclass_fields__, *NOT_PROMPT_SETTINGS}
        return tuple(name for name in cls.__dataclass_fields__ if name not in skipped)

    @classmethod
    def dataset_settings(cls, dataset: str) -> dict[str, Any]:
        """The settings whose default depends on the dataset: its zero-shot template."""
        return {"template": templates_for(dataset)}
