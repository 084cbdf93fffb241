"""MaPLe (Khattak et al., CVPR 2023): language and vision prompts in the first layers of both towers, the vision
prompts coupled to the language ones."""

from ..registry import register_method
from .configuration_maple import MaPLeConfig
from .modeling_maple import MaPLeModel

register_method(
    "maple",
    MaPLeModel,
    recipe={"learning_rate": 0.0035, "per_device_train_batch_size": 4, "num_train_epochs": 5},
    transfer_settings={"prompt_depth": 3},  # the reference's cross-dataset / domain-generalisation config
)

__all__ = ["MaPLeConfig", "MaPLeModel"]
