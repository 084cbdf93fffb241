"""LP++ (Huang et al., CVPR 2024): a linear probe whose class weights blend visual prototypes with text embeddings."""

from ..registry import register_method
from .configuration_lp_plus_plus import LPPlusPlusConfig
from .modeling_lp_plus_plus import LPPlusPlusModel

register_method(
    "lp++",
    LPPlusPlusModel,
    trainer="coop_hf.methods.lp_plus_plus.trainer:LPPlusPlusTrainer",
    recipe={"num_train_epochs": 300},  # the reference's base.yaml train_epoch
)

__all__ = ["LPPlusPlusConfig", "LPPlusPlusModel"]
