"""What every prompt model's config shares: the base CLIP, the class list and the method's own settings."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig

from .data.templates import DEFAULT_TEMPLATE

# Config fields that are not prompt settings: they come from the backbone and the dataset.
NOT_PROMPT_SETTINGS = ("base_model_name_or_path", "backbone_family", "classnames")


@strict
class PromptConfig(PretrainedConfig):
    r"""Base of the prompt models' configs. The class list is the single source of truth for the labels: a saved
    `id2label` is regenerated from it.

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the frozen backbone (`CLIPModel`, `SiglipModel`, ...) the prompt was learned on;
            `from_pretrained` loads it.
        backbone_family (`str`, *optional*):
            The backbone's family (`coop_hf.backbones.BACKBONES`: "clip", "metaclip_2", "siglip", "siglip2"): the
            prompt loads onto no other.
        classnames (`list[str]`):
            The class names in label order. They are also the labels (`id2label`) that pipelines report.
    """

    keys_to_ignore_at_inference = ["image_embeds", "text_embeds"]
    fitted_fields: ClassVar[tuple[str, ...]] = ()
    """Fields that fitting sets (the class list a cache was built on), not settings: no flag, not in a run's record."""

    base_model_name_or_path: str | None = None
    backbone_family: str | None = None
    classnames: list[str] | None = None

    def __post_init__(self, **kwargs):
        kwargs.pop("num_labels", None)
        if self.classnames is not None:
            check_classnames(self.classnames)
            self.classnames = list(self.classnames)
        self.check_prompt_settings()
        self._set_labels()
        super().__post_init__(**kwargs)

    def set_classnames(self, classnames: list[str]) -> None:
        """Move to another class list (checked); the labels follow it."""
        check_classnames(classnames)
        self.classnames = list(classnames)
        self._set_labels()

    def _set_labels(self) -> None:
        self.id2label = dict(enumerate(self.classnames or []))
        self.label2id = {name: index for index, name in self.id2label.items()}

    @classmethod
    def prompt_settings(cls) -> tuple[str, ...]:
        """Names of this config's own prompt settings: what `from_clip` takes and the command line sets."""
        skipped = {*PretrainedConfig.__dataclass_fields__, *NOT_PROMPT_SETTINGS, *cls.fitted_fields}
        return tuple(field.name for field in dataclasses.fields(cls) if field.name not in skipped)

    @classmethod
    def dataset_settings(cls, dataset: str) -> dict[str, Any]:
        """Prompt settings whose default depends on the dataset (e.g. a method's hand-crafted template)."""
        return {}

    def check_prompt_settings(self) -> None:
        """Raise a `ValueError` that names the setting to change when the prompt settings are inconsistent."""


def holds_class_name_once(template: Any) -> bool:
    return isinstance(template, str) and template.count("{}") == 1


def check_template(template: str) -> None:
    """Raise a `ValueError` naming `--template` when a template has no single `{}` for the class name."""
    if not holds_class_name_once(template):
        raise ValueError(
            f"template={template!r} (--template) must hold the class name's place once, as '{{}}': e.g. "
            f"{DEFAULT_TEMPLATE!r}."
        )


def check_templates(templates: list[str]) -> None:
    """Raise a `ValueError` naming `--templates` when a class prompt does not hold the class name exactly once."""
    bad = [template for template in templates if not holds_class_name_once(template)]
    if bad:
        raise ValueError(f"templates (--templates) must each hold the class name once, as '{{}}': {bad}.")


KEPT_EPOCHS = ("best_validation", "last")
"""Which epoch a method that evaluates every epoch keeps (`keep_epoch`): the reference's choice on the validation
split, or the last one (validation-free, as the realistic protocol forces)."""


def check_keep_epoch(keep_epoch: str) -> None:
    """Raise a `ValueError` naming `--keep_epoch` when it is not one of `KEPT_EPOCHS`."""
    if keep_epoch not in KEPT_EPOCHS:
        raise ValueError(f"keep_epoch={keep_epoch!r} (--keep_epoch) must be one of: {', '.join(KEPT_EPOCHS)}.")


def check_augment_views(augment_views: Any) -> None:
    """Raise a `ValueError` naming `--augment_views` unless it is a whole number of augmented views, at least 1."""
    if isinstance(augment_views, bool) or not isinstance(augment_views, int) or augment_views < 1:
        raise ValueError(f"augment_views (--augment_views) must be a whole number >= 1, got {augment_views!r}.")


UNIFIED_CONTEXT_AT_END = {"class_token_position": "end", "class_specific_context": False}
"""CoOp's layout settings that CoCoOp and the deep prompts do not have: one context shared by all classes, the class
name after it."""


def check_unified_context_at_end(config: PretrainedConfig, method: str) -> None:
    """Refuse another CoOp layout than `UNIFIED_CONTEXT_AT_END` for `method`, naming the setting."""
    for name, value in UNIFIED_CONTEXT_AT_END.items():
        if getattr(config, name) != value:
            raise ValueError(
                f"{method} has no {name} setting ({name}={getattr(config, name)!r}): its class tokens follow one "
                f"context shared by all classes ({name}={value!r}). Use --method coop for other layouts."
            )


def check_classnames(classnames: list[str]) -> None:
    """Raise a `ValueError` for an empty class list, blank names or duplicates."""
    if not classnames:
        raise ValueError("The class list is empty: give the class names, in label order.")
    blank = [i for i, name in enumerate(classnames) if not isinstance(name, str) or not name.strip()]
    if blank:
        raise ValueError(f"The class list holds empty or non-string names at positions {blank}: name every class.")
    first_seen: dict[str, int] = {}
    for index, name in enumerate(classnames):
        if name in first_seen:
            raise ValueError(
                f"The class list holds {name!r} twice (positions {first_seen[name]} and {index}): class names must "
                "be unique, or two classes would get the same prompt."
            )
        first_seen[name] = index
