"""The prompt-learning methods, one folder each (its config, its model and its loss), and their registry.

Adding a method: a folder `methods/<name>/` with `configuration_<name>.py` and `modeling_<name>.py`, one entry in
`PROMPT_MODELS` below (the Auto classes), and one in `coop_hf.runners.METHODS` (the command line).
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from ..modeling_utils import PromptPreTrainedModel
from .class_tokens import ClassTokenTuningModel
from .classifier import LinearClassifierModel
from .cocoop import CoCoOpModel
from .coop import CoOpConfig, CoOpModel
from .kgcoop import KgCoOpModel
from .prograd import ProGradModel
from .tenc_ft import TextEncoderFineTuningModel
from .upl import CoOpEnsemble, CoOpEnsembleConfig

PROMPT_MODELS: dict[str, type[PromptPreTrainedModel]] = {
    model.config_class.model_type: model
    for model in (
        CoOpModel,
        CoCoOpModel,
        CoOpEnsemble,
        ClassTokenTuningModel,
        KgCoOpModel,
        ProGradModel,
        LinearClassifierModel,
        TextEncoderFineTuningModel,
    )
}
"""Every prompt model, keyed by its config's `model_type`."""


def register_auto_classes() -> None:
    """Make `AutoConfig`, `AutoModel` and `AutoModelForImageClassification` load every prompt model."""
    for model_type, model in PROMPT_MODELS.items():
        AutoConfig.register(model_type, model.config_class, exist_ok=True)
        AutoModel.register(model.config_class, model, exist_ok=True)
        AutoModelForImageClassification.register(model.config_class, model, exist_ok=True)


__all__ = ["PROMPT_MODELS", "CoOpConfig", "CoOpEnsemble", "CoOpEnsembleConfig", "CoOpModel", "register_auto_classes"]
