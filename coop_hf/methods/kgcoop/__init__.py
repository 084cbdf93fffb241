"""KgCoOp (Yao et al., CVPR 2023): CoOp with a pull of the learned class text features towards a hand-crafted
prompt's."""

from ..registry import register_method
from .configuration_kgcoop import KGCOOP_TEMPLATES, KgCoOpConfig
from .modeling_kgcoop import KgCoOpModel
from .recipes import RECIPES

ORDER = 30  # where `--method` and the tables list this folder's methods

register_method("kgcoop", KgCoOpModel, recipes=RECIPES)

__all__ = ["KGCOOP_TEMPLATES", "KgCoOpConfig", "KgCoOpModel"]
