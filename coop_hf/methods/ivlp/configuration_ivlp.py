"""Configuration of independent vision-language prompts (IVLP): learned tokens in the first layers of each tower,
each layer's own."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ...configuration_utils import UNIFIED_CONTEXT_AT_END
from ..coop.configuration_coop import CoOpConfig
from ..deep_prompts import check_deep_prompt_settings

IVLP_CTX_INIT = "a photo of a"


@strict
class IVLPConfig(CoOpConfig):
    r"""Configuration of an [`IVLPModel`]: independent deep prompts in both towers (Khattak et al., PromptSRC,
    ICCV 2023, and MaPLe's independent V-L baseline), trained with cross-entropy.

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the frozen backbone the prompt was learned on.
        classnames (`list[str]`):
            The class names in label order. They are also the labels (`id2label`) that pipelines report.
        n_ctx (`int`, defaults to 4):
            Learned language tokens per prompted text layer (the reference's N_CTX_TEXT).
        ctx_init (`str`, *optional*, defaults to "a photo of a"):
            The text prompt's phrase: its first `n_ctx` tokens initialise the first layer's language prompts and
            the rest stay fixed words before the class name. None, or an `n_ctx` longer than the phrase: N(0, 0.02)
            vectors in front of the class name.
        n_ctx_vision (`int`, defaults to 4):
            Learned vision tokens per prompted image layer (N_CTX_VISION).
        prompt_depth_text (`int`, defaults to 9):
            Text layers with prompts: the first from the context, layers 2..J each their own (PROMPT_DEPTH_TEXT; 3
            in PromptSRC's cross-dataset config).
        prompt_depth_vision (`int`, defaults to 9):
            Image layers with prompts, each its own (PROMPT_DEPTH_VISION); 0: none (language prompts only).
        class_token_position (`str`, defaults to "end"):
            Always "end".
        class_specific_context (`bool`, defaults to False):
            Always False.
    """

    model_type = "ivlp"
    method_label = "IVLP"  # how errors name the method (not a setting: no annotation)

    n_ctx: int = 4
    ctx_init: str | None = IVLP_CTX_INIT
    n_ctx_vision: int = 4
    prompt_depth_text: int = 9
    prompt_depth_vision: int = 9

    @classmethod
    def prompt_settings(cls) -> tuple[str, ...]:
        return tuple(name for name in super().prompt_settings() if name not in UNIFIED_CONTEXT_AT_END)

    def check_prompt_settings(self) -> None:
        depths = {
            "prompt_depth_text": (self.prompt_depth_text, 1),
            "prompt_depth_vision": (self.prompt_depth_vision, 0),
            "n_ctx_vision": (self.n_ctx_vision, 1),
        }
        check_deep_prompt_settings(self, self.method_label, depths)
        super().check_prompt_settings()
