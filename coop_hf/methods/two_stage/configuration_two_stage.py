"""Configuration of 2SFS: LayerNorm tuning of both towers through `peft`, then a linear classifier on top."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ...configuration_utils import PromptConfig, check_template
from ...data.templates import DEFAULT_TEMPLATE

LN_ENCODERS = ("text", "vision", "both")


@strict
class TwoStageConfig(PromptConfig):
    r"""Configuration of a [`TwoStageModel`] (Farina et al., "Rethinking Few-Shot Adaptation of Vision-Language
    Models in Two Stages", CVPR 2025). The defaults are the paper's fixed hyperparameters (the official `main.py`).

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the backbone whose LayerNorms are tuned (the model owns a copy).
        classnames (`list[str]`):
            The class names in label order. They are also the labels (`id2label`) that pipelines report.
        first_stage_fraction (`float`, defaults to 0.6):
            Share of the training steps spent in stage one, tuning the LayerNorms (the paper's alpha,
            `--n_iters_frac`); the remaining steps train the linear classifier.
        ln_encoder (`str`, defaults to "both"):
            Towers whose LayerNorms stage one tunes: text, vision or both (`--ln_modality`).
        ln_vision_start (`int`, defaults to 0):
            First layer of the image tower whose LayerNorms are tuned (`--ln_vision_start`).
        ln_text_start (`int`, defaults to 0):
            First layer of the text tower whose LayerNorms are tuned (`--ln_text_start`).
        template (`str`, defaults to "a photo of a {}."):
            The class prompt, with `{}` for the class name (the official code's on every dataset).
        fitted_classnames (`list[str]`, *optional*):
            The classes the linear classifier was trained on (set when stage two starts): at inference these take
            the classifier's rows, every other class the adapted text tower's features (selective inference).
    """

    model_type = "two_stage_fs"
    fitted_fields = ("fitted_classnames",)

    first_stage_fraction: float = 0.6
    ln_encoder: str = "both"
    ln_vision_start: int = 0
    ln_text_start: int = 0
    template: str = DEFAULT_TEMPLATE
    fitted_classnames: list[str] | None = None

    def check_prompt_settings(self) -> None:
        if not 0 <= self.first_stage_fraction <= 1:
            raise ValueError(
                f"first_stage_fraction (--first_stage_fraction) must be in [0, 1], got {self.first_stage_fraction!r}."
            )
        if self.ln_encoder not in LN_ENCODERS:
            raise ValueError(f"ln_encoder (--ln_encoder) is one of {', '.join(LN_ENCODERS)}, got {self.ln_encoder!r}.")
        for name in ("ln_vision_start", "ln_text_start"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} (--{name}) must be a whole number >= 0, got {value!r}.")
        check_template(self.template)
