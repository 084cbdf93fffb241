"""Configuration of a PromptSRC prompt: IVLP's deep prompts with the self-regulating losses and the Gaussian
prompt aggregation over epochs."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..ivlp.configuration_ivlp import IVLPConfig


def _non_negative(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (positive and value == 0):
        kind = "a positive" if positive else "a non-negative"
        raise ValueError(f"{name} (--{name}) must be {kind} number, got {value!r}.")
    return float(value)


@strict
class PromptSRCConfig(IVLPConfig):
    r"""Configuration of a [`PromptSRCModel`] (Khattak et al., "Self-regulating Prompts: Foundational Model
    Adaptation without Forgetting", ICCV 2023): IVLP's prompts trained with self-regulating constraints.

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the frozen backbone the prompt was learned on.
        classnames (`list[str]`):
            The class names in label order. They are also the labels (`id2label`) that pipelines report.
        n_ctx (`int`, defaults to 4):
            Learned language tokens per prompted text layer (N_CTX_TEXT).
        ctx_init (`str`, *optional*, defaults to "a photo of a"):
            The text prompt's phrase: its first `n_ctx` tokens initialise the first layer's language prompts.
        n_ctx_vision (`int`, defaults to 4):
            Learned vision tokens per prompted image layer (N_CTX_VISION).
        prompt_depth_text (`int`, defaults to 9):
            Text layers with prompts (PROMPT_DEPTH_TEXT; 3 in the cross-dataset config).
        prompt_depth_vision (`int`, defaults to 9):
            Image layers with prompts (PROMPT_DEPTH_VISION; 3 in the cross-dataset config).
        text_loss_weight (`float`, defaults to 25.0):
            Weight of the L1 distance between the prompted and the frozen text features (TEXT_LOSS_WEIGHT).
        image_loss_weight (`float`, defaults to 10.0):
            Weight of the L1 distance between the prompted and the frozen image features (IMAGE_LOSS_WEIGHT).
        gpa_mean (`float`, defaults to 15.0):
            Mean (in epochs, counted from 1) of the Gaussian that weighs each epoch's prompts in the aggregate
            that training ends with (GPA_MEAN: 15 for 20 epochs; 6 in the cross-dataset config, 30 in the few-shot
            one).
        gpa_std (`float`, defaults to 1.0):
            Its standard deviation (GPA_STD: 1; 10 cross-dataset, 30 few-shot).
        class_token_position (`str`, defaults to "end"):
            Always "end".
        class_specific_context (`bool`, defaults to False):
            Always False.
    """

    model_type = "promptsrc"
    method_label = "PromptSRC"

    text_loss_weight: float = 25.0
    image_loss_weight: float = 10.0
    gpa_mean: float = 15.0
    gpa_std: float = 1.0

    def __post_init__(self, **kwargs):
        self.text_loss_weight = _non_negative("text_loss_weight", self.text_loss_weight)
        self.image_loss_weight = _non_negative("image_loss_weight", self.image_loss_weight)
        if isinstance(self.gpa_mean, bool) or not isinstance(self.gpa_mean, (int, float)):
            raise ValueError(f"gpa_mean (--gpa_mean) must be a number of epochs, got {self.gpa_mean!r}.")
        self.gpa_mean = float(self.gpa_mean)
        self.gpa_std = _non_negative("gpa_std", self.gpa_std, positive=True)
        super().__post_init__(**kwargs)
