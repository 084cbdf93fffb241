"""KgCoOp (Yao et al., CVPR 2023): CoOp with a pull of the learned class text features towards a hand-crafted
prompt's."""

from .configuration_kgcoop import KGCOOP_TEMPLATES, KgCoOpConfig
from .modeling_kgcoop import KgCoOpModel

__all__ = ["KGCOOP_TEMPLATES", "KgCoOpConfig", "KgCoOpModel"]
