"""Configuration of a CoOp prompt learned on top of a frozen CLIP."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ...configuration_utils import PromptConfig

__all__ = ["CLASS_TOKEN_POSITIONS", "CoOpConfig"]

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")


@strict
class CoOpConfig(PromptConfig):
    r"""Configuration of a [`CoOpModel`]: which CLIP it sits on, the class list and the shape of the context.

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the frozen backbone (`CLIPModel`, `SiglipModel`, ...) the prompt was learned on.
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

    n_ctx: int = 16
    ctx_init: str | None = None
    class_token_position: str = "end"
    class_specific_context: bool = False

    def __post_init__(self, **kwargs):
        self.ctx_init = self.ctx_init or None
        super().__post_init__(**kwargs)

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
