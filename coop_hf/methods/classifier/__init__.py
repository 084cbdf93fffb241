"""Linear classifiers on frozen CLIP image features (PTNL's Classifier-R and Classifier-C, Wu et al., ICCV 2023)."""

from ..registry import register_method
from .configuration_classifier import CLASSIFIER_INITS, ClassifierConfig
from .modeling_classifier import LinearClassifierModel

ORDER = 120  # where `--method` and the tables list this folder's methods

register_method("classifier-r", LinearClassifierModel, settings={"init": "random"}, label="Classifier-R")
register_method("classifier-c", LinearClassifierModel, settings={"init": "text"}, label="Classifier-C")

__all__ = ["CLASSIFIER_INITS", "ClassifierConfig", "LinearClassifierModel"]
