"""PTNL's class-token models (Wu et al., ICCV 2023): CoOp whose class-name token embeddings are learned too
(Full-Prompt-Tuning), or alone behind a fixed hand-written context (CLS-Tuning)."""

from ..registry import register_method
from .configuration_class_tokens import ClassTokenConfig
from .modeling_class_tokens import ClassTokenTuningModel

ORDER = 130  # where `--method` and the tables list this folder's methods

register_method("full-prompt", ClassTokenTuningModel, label="Full-Prompt-Tuning")
register_method(
    "cls-tuning",
    ClassTokenTuningModel,
    settings={"learn_context": False},
    defaults={"ctx_init": "a photo of a"},
    label="CLS-Tuning",
)

__all__ = ["ClassTokenConfig", "ClassTokenTuningModel"]
