"""Configuration of a prompt whose class-name token embeddings are learned, with or without its context."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..coop.configuration_coop import CoOpConfig


@strict
class ClassTokenConfig(CoOpConfig):
    r"""Configuration of a [`ClassTokenTuningModel`]: a CoOp prompt whose class-name token embeddings are learned
    as well (PTNL's Full-Prompt-Tuning) or instead of the context (PTNL's CLS-Tuning, `learn_context=False`).

    Args:
        n_ctx (`int`, defaults to 16):
            Number of context vectors M. With `ctx_init` it is the phrase's BPE token count.
        ctx_init (`str`, *optional*):
            A phrase such as "a photo of a" whose token embeddings initialise the context (the fixed context when
            learn_context is false); None for N(0, 0.02) vectors.
        learn_context (`bool`, defaults to True):
            Learn the context along with the class-name tokens (Full-Prompt-Tuning); false keeps the `ctx_init`
            phrase fixed and learns the class-name tokens alone (CLS-Tuning).
        kwargs: The [`CoOpConfig`] settings (class_token_position, class_specific_context, ...).
    """

    model_type = "class-token-tuning"

    learn_context: bool = True

    def check_prompt_settings(self) -> None:
        if not self.learn_context and self.ctx_init is None:
            raise ValueError(
                "learn_context=False keeps the context fixed, so it needs a phrase to fix it to: set --ctx_init "
                "(e.g. 'a photo of a'), or learn the context with --learn_context true."
            )
        super().check_prompt_settings()
