"""PTNL's class-token models (Wu et al., ICCV 2023): CoOp whose class-name token embeddings are learned too
(Full-Prompt-Tuning), or alone behind a fixed hand-written context (CLS-Tuning)."""

from .configuration_class_tokens import ClassTokenConfig
from .modeling_class_tokens import ClassTokenTuningModel

__all__ = ["ClassTokenConfig", "ClassTokenTuningModel"]
