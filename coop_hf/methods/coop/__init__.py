"""CoOp (Zhou et al., IJCV 2022): learned context vectors in front of the class name."""

from ...modeling_utils import PromptModelOutput
from ..registry import register_method
from .configuration_coop import CoOpConfig
from .modeling_coop import CoOpModel, PromptLearner
from .recipes import RECIPES

ORDER = 10  # where `--method` and the tables list this folder's methods

register_method("coop", CoOpModel, recipes=RECIPES)

CoOpOutput = PromptModelOutput  # what every prompt model returns, under its first name

__all__ = ["CoOpConfig", "CoOpModel", "CoOpOutput", "PromptLearner"]
