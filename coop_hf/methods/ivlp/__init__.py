"""IVLP: independent vision-language prompts in the first layers of both towers, trained with cross-entropy
(the base model of PromptSRC, Khattak et al., ICCV 2023). `DeepPromptModel` is the base of every deep-prompt method."""

from ..registry import register_method
from .configuration_ivlp import IVLPConfig
from .modeling_ivlp import DeepPromptModel, IVLPModel

register_method(
    "ivlp",
    IVLPModel,
    recipe={"learning_rate": 0.0025, "per_device_train_batch_size": 4, "num_train_epochs": 20},
    transfer_settings={"prompt_depth_text": 3, "prompt_depth_vision": 3},
)

__all__ = ["DeepPromptModel", "IVLPConfig", "IVLPModel"]
