"""coop-hf: prompt learning for contrastive vision-language models (CoOp and its successors on CLIP, MetaCLIP 2,
SigLIP and SigLIP 2), native to transformers, datasets and the Hub.

Every method folder's public names (its `__all__`: `CoOpModel`, `CoOpConfig`, ...) are exported here by themselves:
adding a method folder adds them.
"""

import importlib as _importlib

from . import methods as _methods
from .backbones import BACKBONES, Backbone, backbone_for, load_backbone
from .configuration_utils import PromptConfig
from .methods import METHODS, PROMPT_MODELS, PROTOCOLS, MethodSpec, Recipe, register_method, register_model
from .modeling_utils import PromptModelOutput, PromptPreTrainedModel, TextFeatureClassifier

CoOpOutput = PromptModelOutput

__all__ = [
    "BACKBONES",
    "METHODS",
    "PROMPT_MODELS",
    "PROTOCOLS",
    "Backbone",
    "CoOpOutput",
    "MethodSpec",
    "PromptConfig",
    "PromptModelOutput",
    "PromptPreTrainedModel",
    "Recipe",
    "TextFeatureClassifier",
    "backbone_for",
    "load_backbone",
    "register_method",
    "register_model",
]

for _folder in _methods.FOLDERS:
    _module = _importlib.import_module(f"{_methods.__name__}.{_folder}")
    _names = getattr(_module, "__all__", [])
    globals().update({name: getattr(_module, name) for name in _names})
    __all__ += _names

__version__ = "0.1.0"
