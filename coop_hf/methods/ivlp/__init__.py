"""IVLP: independent vision-language prompts in the first layers of both towers, trained with cross-entropy
(the base model of PromptSRC, Khattak et al., ICCV 2023).
Its base, `DeepPromptModel`, is shared with MaPLe and PromptSRC in `coop_hf.methods.deep_prompts`."""

from ..registry import register_method
from .configuration_ivlp import IVLPConfig
from .modeling_ivlp import IVLPModel
from .recipes import RECIPES

ORDER = 50  # where `--method` and the tables list this folder's methods

register_method("ivlp", IVLPModel, recipes=RECIPES)

__all__ = ["IVLPConfig", "IVLPModel"]
