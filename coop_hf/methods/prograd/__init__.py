"""ProGrad (Zhu et al., ICCV 2023): CoOp whose cross-entropy gradient is projected off the direction that conflicts
with zero-shot CLIP's. Its update rule is `coop_hf.methods.prograd.trainer.ProGradTrainer` (imported from there, so
that importing the method does not load `transformers.Trainer`)."""

from ..registry import register_method
from .configuration_prograd import PROGRAD_TEMPLATES, ProGradConfig
from .modeling_prograd import ProGradModel
from .recipes import RECIPES

ORDER = 40  # where `--method` and the tables list this folder's methods

register_method("prograd", ProGradModel, trainer="coop_hf.methods.prograd.trainer:ProGradTrainer", recipes=RECIPES)

__all__ = ["PROGRAD_TEMPLATES", "ProGradConfig", "ProGradModel"]
