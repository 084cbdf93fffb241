"""Configuration of a CoCoOp prompt: CoOp's context plus a meta-network that conditions it on each image."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ...configuration_utils import UNIFIED_CONTEXT_AT_END, check_unified_context_at_end
from ..coop.configuration_coop import CoOpConfig

COCOOP_CTX_INIT = "a photo of a"


@strict
class CoCoOpConfig(CoOpConfig):
    r"""Configuration of a [`CoCoOpModel`]: which CLIP it sits on, the class list and the context length. The
    meta-network's shape follows from the CLIP (projection dim -> projection dim // 16 -> text width).

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the frozen backbone (`CLIPModel`, `SiglipModel`, ...) the prompt was learned on.
        classnames (`list[str]`):
            The class names in label order; each becomes the class token(s) of one prompt. They are also the
            labels (`id2label`) that pipelines report.
        n_ctx (`int`, defaults to 4):
            Number of learned context vectors M. With `ctx_init` it is the phrase's BPE token count.
        ctx_init (`str`, *optional*, defaults to "a photo of a"):
            A phrase whose token embeddings initialise the context; empty or None for N(0, 0.02) vectors (the
            reference's c8 / c16 configs, with `n_ctx` 8 or 16).
        class_token_position (`str`, defaults to "end"):
            Always "end" in CoCoOp: the class tokens follow the context.
        class_specific_context (`bool`, defaults to False):
            Always False in CoCoOp: one context for all classes, shifted per image by the meta-network.
    """

    model_type = "cocoop"

    n_ctx: int = 4
    ctx_init: str | None = COCOOP_CTX_INIT

    @classmethod
    def prompt_settings(cls) -> tuple[str, ...]:
        return tuple(name for name in super().prompt_settings() if name not in UNIFIED_CONTEXT_AT_END)

    def check_prompt_settings(self) -> None:
        check_unified_context_at_end(self, "CoCoOp")
        super().check_prompt_settings()
