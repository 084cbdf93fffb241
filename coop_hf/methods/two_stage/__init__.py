"""2SFS (Farina et al., CVPR 2025): LayerNorm tuning of both towers through `peft`, then a linear classifier on the
adapted image features, with selective inference for classes it was not trained on."""

from ..registry import register_method
from .configuration_two_stage import TwoStageConfig
from .modeling_two_stage import TwoStageModel
from .recipes import RECIPES

ORDER = 85  # where `--method` and the tables list this folder's methods: after CLIP-LoRA

register_method(
    "2sfs",
    TwoStageModel,
    trainer="coop_hf.methods.two_stage.trainer:TwoStageTrainer",
    recipes=RECIPES,
)

__all__ = ["TwoStageConfig", "TwoStageModel"]
