"""coop-hf: prompt learning for CLIP (CoOp and its successors), native to transformers, datasets and the Hub."""

from .methods import PROMPT_MODELS, register_auto_classes
from .methods.coop import CoOpConfig, CoOpModel, PromptLearner
from .methods.upl import CoOpEnsemble, CoOpEnsembleConfig
from .modeling_utils import PromptModelOutput, PromptPreTrainedModel

CoOpOutput = PromptModelOutput

register_auto_classes()

__all__ = [
    "PROMPT_MODELS",
    "CoOpConfig",
    "CoOpEnsemble",
    "CoOpEnsembleConfig",
    "CoOpModel",
    "CoOpOutput",
    "PromptLearner",
    "PromptModelOutput",
    "PromptPreTrainedModel",
]
__version__ = "0.1.0"
