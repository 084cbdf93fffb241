"""UPL (Huang et al., 2022): prompts trained on zero-shot pseudo-labels, averaged as an ensemble."""

from ..registry import register_model
from .configuration_upl import CoOpEnsembleConfig
from .modeling_upl import CoOpEnsemble
from .pseudo_labels import UPL_TOP_K, pseudo_label_accuracy, pseudo_label_dataset, select_confident_pseudo_labels

ORDER = 150  # where `--method` and the tables list this folder's methods

register_model(CoOpEnsemble)  # UPL's runner trains CoOp prompts; the ensemble is what it saves

__all__ = [
    "UPL_TOP_K",
    "CoOpEnsemble",
    "CoOpEnsembleConfig",
    "pseudo_label_accuracy",
    "pseudo_label_dataset",
    "select_confident_pseudo_labels",
]
