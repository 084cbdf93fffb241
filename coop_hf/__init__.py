"""coop-hf: prompt learning for CLIP (CoOp and its successors), native to transformers, datasets and the Hub."""

from .methods import PROMPT_MODELS, register_auto_classes
from .methods.class_tokens import ClassTokenConfig, ClassTokenTuningModel
from .methods.classifier import ClassifierConfig, LinearClassifierModel
from .methods.cocoop import CoCoOpConfig, CoCoOpModel
from .methods.coop import CoOpConfig, CoOpModel, PromptLearner
from .methods.kgcoop import KgCoOpConfig, KgCoOpModel
from .methods.prograd import ProGradConfig, ProGradModel
from .methods.tenc_ft import TextEncoderFineTuningConfig, TextEncoderFineTuningModel
from .methods.upl import CoOpEnsemble, CoOpEnsembleConfig
from .modeling_utils import PromptModelOutput, PromptPreTrainedModel

CoOpOutput = PromptModelOutput

register_auto_classes()

__all__ = [
    "PROMPT_MODELS",
    "ClassTokenConfig",
    "ClassTokenTuningModel",
    "ClassifierConfig",
    "CoCoOpConfig",
    "CoCoOpModel",
    "CoOpConfig",
    "CoOpEnsemble",
    "CoOpEnsembleConfig",
    "CoOpModel",
    "CoOpOutput",
    "KgCoOpConfig",
    "KgCoOpModel",
    "LinearClassifierModel",
    "ProGradConfig",
    "ProGradModel",
    "PromptLearner",
    "PromptModelOutput",
    "PromptPreTrainedModel",
    "TextEncoderFineTuningConfig",
    "TextEncoderFineTuningModel",
]
__version__ = "0.1.0"
