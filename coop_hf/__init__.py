"""coop-hf: prompt learning for contrastive vision-language models (CoOp and its successors on CLIP, MetaCLIP 2,
SigLIP and SigLIP 2), native to transformers, datasets and the Hub."""

from .backbones import BACKBONES, Backbone, backbone_for, load_backbone
from .configuration_utils import PromptConfig
from .methods import METHODS, PROMPT_MODELS, MethodSpec, register_method, register_model
from .methods.class_tokens import ClassTokenConfig, ClassTokenTuningModel
from .methods.classifier import ClassifierConfig, LinearClassifierModel
from .methods.clip_adapter import CLIPAdapterConfig, CLIPAdapterModel
from .methods.clip_lora import CLIPLoRAConfig, CLIPLoRAModel
from .methods.cocoop import CoCoOpConfig, CoCoOpModel
from .methods.coop import CoOpConfig, CoOpModel, PromptLearner
from .methods.ivlp import IVLPConfig, IVLPModel
from .methods.kgcoop import KgCoOpConfig, KgCoOpModel
from .methods.lp_plus_plus import LPPlusPlusConfig, LPPlusPlusModel
from .methods.maple import MaPLeConfig, MaPLeModel
from .methods.prograd import ProGradConfig, ProGradModel
from .methods.promptsrc import PromptSRCConfig, PromptSRCModel
from .methods.tenc_ft import TextEncoderFineTuningConfig, TextEncoderFineTuningModel
from .methods.tip_adapter import TipAdapterConfig, TipAdapterModel
from .methods.upl import CoOpEnsemble, CoOpEnsembleConfig
from .modeling_utils import PromptModelOutput, PromptPreTrainedModel

CoOpOutput = PromptModelOutput

__all__ = [
    "BACKBONES",
    "METHODS",
    "PROMPT_MODELS",
    "Backbone",
    "CLIPAdapterConfig",
    "CLIPAdapterModel",
    "LPPlusPlusConfig",
    "LPPlusPlusModel",
    "TipAdapterConfig",
    "TipAdapterModel",
    "CLIPLoRAConfig",
    "CLIPLoRAModel",
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
    "IVLPConfig",
    "IVLPModel",
    "KgCoOpConfig",
    "KgCoOpModel",
    "LinearClassifierModel",
    "MaPLeConfig",
    "MaPLeModel",
    "MethodSpec",
    "ProGradConfig",
    "ProGradModel",
    "PromptConfig",
    "PromptLearner",
    "PromptModelOutput",
    "PromptSRCConfig",
    "PromptSRCModel",
    "PromptPreTrainedModel",
    "TextEncoderFineTuningConfig",
    "TextEncoderFineTuningModel",
    "backbone_for",
    "load_backbone",
    "register_method",
    "register_model",
]
__version__ = "0.1.0"
