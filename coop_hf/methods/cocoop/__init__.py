"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context shifted per image by a meta-network, for unseen classes."""

from ..registry import register_method
from .configuration_cocoop import CoCoOpConfig
from .modeling_cocoop import CoCoOpModel

register_method("cocoop", CoCoOpModel, recipe={"per_device_train_batch_size": 1, "num_train_epochs": 10})

__all__ = ["CoCoOpConfig", "CoCoOpModel"]
