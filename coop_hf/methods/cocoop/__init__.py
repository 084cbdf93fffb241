"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context shifted per image by a meta-network, for unseen classes."""

from ..registry import register_method
from .configuration_cocoop import CoCoOpConfig
from .modeling_cocoop import CoCoOpModel
from .recipes import RECIPES

ORDER = 20  # where `--method` and the tables list this folder's methods

register_method("cocoop", CoCoOpModel, recipes=RECIPES)

__all__ = ["CoCoOpConfig", "CoCoOpModel"]
