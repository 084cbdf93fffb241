"""LP++ (Huang et al., CVPR 2024): a linear probe whose class weights blend visual prototypes with text embeddings."""

from ..registry import register_method
from .configuration_lp_plus_plus import LPPlusPlusConfig
from .modeling_lp_plus_plus import LPPlusPlusModel
from .recipes import RECIPES

ORDER = 110  # where `--method` and the tables list this folder's methods

register_method(
    "lp++",
    LPPlusPlusModel,
    trainer="coop_hf.methods.lp_plus_plus.trainer:LPPlusPlusTrainer",
    fitted=True,
    recipes=RECIPES,
)

__all__ = ["LPPlusPlusConfig", "LPPlusPlusModel"]
