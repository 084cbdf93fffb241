"""MaPLe (Khattak et al., CVPR 2023): language and vision prompts in the first layers of both towers, the vision
prompts coupled to the language ones."""

from ..registry import register_method
from .configuration_maple import MaPLeConfig
from .modeling_maple import MaPLeModel
from .recipes import RECIPES

ORDER = 60  # where `--method` and the tables list this folder's methods

register_method(
    "maple",
    MaPLeModel,
    recipes=RECIPES,
)

__all__ = ["MaPLeConfig", "MaPLeModel"]
