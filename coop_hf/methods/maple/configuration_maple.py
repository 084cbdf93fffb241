"""Configuration of a MaPLe prompt: language prompts in the first layers of the text tower, coupled to vision
prompts in the same layers of the image tower."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ...configuration_utils import UNIFIED_CONTEXT_AT_END
from ..coop.configuration_coop import CoOpConfig
from ..deep_prompts import check_deep_prompt_settings

MAPLE_CTX_INIT = "a photo of a"


@strict
class MaPLeConfig(CoOpConfig):
    r"""Configuration of a [`MaPLeModel`] (Khattak et al., "MaPLe: Multi-modal Prompt Learning", CVPR 2023).

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the frozen backbone the prompt was learned on.
        classnames (`list[str]`):
            The class names in label order. They are also the labels (`id2label`) that pipelines report.
        n_ctx (`int`, defaults to 2):
            Learned prompt tokens per prompted layer, in each tower (the reference's N_CTX).
        ctx_init (`str`, *optional*, defaults to "a photo of a"):
            The text prompt's phrase: its first `n_ctx` tokens initialise the learned language context and the rest
            stay fixed words before the class name ("a photo" learned, "of a" fixed, as the reference). None, or
            an `n_ctx` longer than the phrase: N(0, 0.02) vectors in front of the class name.
        prompt_depth (`int`, defaults to 9):
            Layers J of each tower that get prompts: the first layer's come from the context, layers 2..J have
            their own (1: shallow MaPLe). 3 in the reference's cross-dataset and domain-generalisation config.
        class_token_position (`str`, defaults to "end"):
            Always "end" in MaPLe.
        class_specific_context (`bool`, defaults to False):
            Always False in MaPLe.
    """

    model_type = "maple"

    n_ctx: int = 2
    ctx_init: str | None = MAPLE_CTX_INIT
    prompt_depth: int = 9

    @classmethod
    def prompt_settings(cls) -> tuple[str, ...]:
        return tuple(name for name in super().prompt_settings() if name not in UNIFIED_CONTEXT_AT_END)

    def check_prompt_settings(self) -> None:
        check_deep_prompt_settings(self, "MaPLe", {"prompt_depth": (self.prompt_depth, 1)})
        super().check_prompt_settings()
