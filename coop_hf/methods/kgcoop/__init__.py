"""KgCoOp (Yao et al., CVPR 2023): CoOp with a pull of the learned class text features towards a hand-crafted
prompt's."""

from ..registry import register_method
from .configuration_kgcoop import KGCOOP_TEMPLATES, KgCoOpConfig
from .modeling_kgcoop import KgCoOpModel

register_method("kgcoop", KgCoOpModel, recipe={"per_device_train_batch_size": 128, "num_train_epochs": 100})

__all__ = ["KGCOOP_TEMPLATES", "KgCoOpConfig", "KgCoOpModel"]
