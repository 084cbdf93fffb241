"""PromptSRC (Khattak et al., ICCV 2023): independent deep vision-language prompts regulated towards the frozen
model, aggregated over epochs with Gaussian weights."""

from ..registry import register_method
from .configuration_promptsrc import PromptSRCConfig
from .modeling_promptsrc import PromptSRCModel

register_method(
    "promptsrc",
    PromptSRCModel,
    trainer="coop_hf.methods.promptsrc.trainer:PromptSRCTrainer",
    recipe={"learning_rate": 0.0025, "per_device_train_batch_size": 4, "num_train_epochs": 20},
    # the reference's cross-dataset / domain-generalisation config
    transfer_settings={"prompt_depth_text": 3, "prompt_depth_vision": 3, "gpa_mean": 6.0, "gpa_std": 10.0},
)

__all__ = ["PromptSRCConfig", "PromptSRCModel"]
