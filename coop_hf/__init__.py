"""coop-hf: CoOp prompt learning for CLIP, native to transformers, datasets and the Hugging Face Hub."""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_coop import CoOpConfig
from .modeling_coop import CoOpModel, CoOpOutput, PromptLearner
from .upl import CoOpEnsemble, CoOpEnsembleConfig

AutoConfig.register(CoOpConfig.model_type, CoOpConfig, exist_ok=True)
AutoModel.register(CoOpConfig, CoOpModel, exist_ok=True)
AutoModelForImageClassification.register(CoOpConfig, CoOpModel, exist_ok=True)
AutoConfig.register(CoOpEnsembleConfig.model_type, CoOpEnsembleConfig, exist_ok=True)
AutoModel.register(CoOpEnsembleConfig, CoOpEnsemble, exist_ok=True)
AutoModelForImageClassification.register(CoOpEnsembleConfig, CoOpEnsemble, exist_ok=True)

__all__ = ["CoOpConfig", "CoOpEnsemble", "CoOpEnsembleConfig", "CoOpModel", "CoOpOutput", "PromptLearner"]
__version__ = "0.1.0"
