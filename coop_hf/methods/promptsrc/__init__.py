"""PromptSRC (Khattak et al., ICCV 2023): independent deep vision-language prompts regulated towards the frozen
model, aggregated over epochs with Gaussian weights."""

from ..registry import register_method
from .configuration_promptsrc import PromptSRCConfig
from .modeling_promptsrc import PromptSRCModel
from .recipes import RECIPES

ORDER = 70  # where `--method` and the tables list this folder's methods

register_method(
    "promptsrc",
    PromptSRCModel,
    trainer="coop_hf.methods.promptsrc.trainer:PromptSRCTrainer",
    recipes=RECIPES,
)

__all__ = ["PromptSRCConfig", "PromptSRCModel"]
