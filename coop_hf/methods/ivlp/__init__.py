"""IVLP: independent vision-language prompts in the first layers of both towers, trained with cross-entropy
(the base model of PromptSRC, Khattak et al., ICCV 2023). `DeepPromptModel` is the base of every deep-prompt method."""

from ..registry import register_method
from .configuration_ivlp import IVLPConfig
from .modeling_ivlp import DeepPromptModel, IVLPModel
from .recipes import RECIPES

register_method("ivlp", IVLPModel, recipes=RECIPES)

__all__ = ["DeepPromptModel", "IVLPConfig", "IVLPModel"]
