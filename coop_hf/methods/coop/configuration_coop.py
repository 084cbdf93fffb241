"""Configuration of a CoOp prompt learned on top of a frozen CLIP."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
# Config fields that are not prompt settings: they come from the base CLIP and the dataset.
NOT_PROMPT_SETTINGS = ("base_model_name_or_path", "classnames")


@strict
class CoOpConfig(PretrainedConfig):
    r"""Configuration of a [`CoOpModel`]: which CLIP it sits on, the class list and the shape of the context.

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the frozen `CLIPModel` the prompt was learned on; `from_pretrained` loads it.
        classnames (`list[str]`):
            The class names in label order; each becomes the class token(s) of one prompt. They are also the
            labels (`id2label`) that pipelines report.
        n_ctx (`int`, defaults to 16):
            Number of learned context vectors M. With `ctx_init` it is the phrase's BPE token count.
        ctx_init (`str`, *optional*):
            A phrase such as "a photo of a" whose token embeddings initialise the context; None for N(0, 0.02).
        class_token_position (`str`, defaults to "end"):
            Where the class tokens sit among the context: "end", "middle" or "front".
        class_specific_context (`bool`, defaults to False):
            Learn one context per class (CSC) instead of one shared by all classes.
    """

    model_type = "coop"
    keys_to_ignore_at_inference = ["image_embeds", "text_embeds"]

    base_model_name_or_path: str | None = None
    classnames: list[str] | None = None
    n_ctx: int = 16
    ctx_init: str | None = None
    class_token_position: str = "end"
    class_specific_context: bool = False

    def __post_init__(self, **kwargs):
        # The class list is the single source of truth for the labels: a saved id2label is regenerated from it.
        kwargs.pop("num_labels", None)
        if self.classnames is not None:
            check_classnames(self.classnames)
            self.classnames = list(self.classnames)
        self.ctx_init = self.ctx_init or None
        self.check_prompt_settings()
        self.id2label = dict(enumerate(self.classnames or []))
        self.label2id = {name: index for index, name in self.id2label.items()}
        super().__post_init__(**kwargs)

    @classmethod
    def prompt_settings(cls) -> tuple[str, ...]:
        """Names of this config's own prompt settings: what `from_clip` takes and the command line sets."""
        skipped = {*PretrainedConfig.__dataclass_fields__, *NOT_PROMPT_SETTINGS}
        return tuple(name for name in cls.__dataclass_fields__ if name not in skipped)

    @classmethod
    def dataset_settings(cls, dataset: str) -> dict[str, Any]:
        """Prompt settings whose default depends on the dataset (e.g. a method's hand-crafted template); none for
        CoOp."""
        return {}

    def check_prompt_settings(self) -> None:
        """Raise a `ValueError` that names the setting to change when the prompt settings are inconsistent."""
        if self.class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(
                f"class_token_position={self.class_token_position!r} is not supported: "
                f"use one of {', '.join(repr(p) for p in CLASS_TOKEN_POSITIONS)}."
            )
        if isinstance(self.n_ctx, bool) or not isinstance(self.n_ctx, int) or self.n_ctx < 1:
            raise ValueError(f"n_ctx must be a positive number of context vectors, got {self.n_ctx!r}.")
        if self.ctx_init is not None and self.class_specific_context:
            raise ValueError(
                "ctx_init cannot be combined with class_specific_context=True: class-specific contexts start "
                "from random vectors. Drop ctx_init or set class_specific_context=False."
            )


def check_classnames(classnames: list[str]) -> None:
    """Raise a `ValueError` for an empty class list, blank names or duplicates."""
    if not classnames:
        raise ValueError("The class list is empty: give the class names, in label order.")
    blank = [i for i, name in enumerate(classnames) if not isinstance(name, str) or not name.strip()]
    if blank:
        raise ValueError(
            f"The class list holds empty or non-string names at positions {blank}: name every class."
        )
    first_seen: dict[str, int] = {}
    for index, name in enumerate(classnames):
        if name in first_seen:
            raise ValueError(
                f"The class list holds {name!r} twice (positions {first_seen[name]} and {index}): class names must "
                "be unique, or two classes would get the same prompt."
            )
        first_seen[name] = index
