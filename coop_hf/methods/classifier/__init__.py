"""Linear classifiers on frozen CLIP image features (PTNL's Classifier-R and Classifier-C, Wu et al., ICCV 2023)."""

from .configuration_classifier import CLASSIFIER_INITS, ClassifierConfig
from .modeling_classifier import LinearClassifierModel

__all__ = ["CLASSIFIER_INITS", "ClassifierConfig", "LinearClassifierModel"]
