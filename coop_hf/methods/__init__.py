"""The prompt-learning methods, one folder each: its config, its model, its trainer where its update differs, and
the registration of its `--method` names (`coop_hf.methods.registry`). Adding a method is a folder and one import
line below; see the README's "Adding a method".
"""

# isort: off  (registration order is the order `--method` lists them)
from . import class_tokens, classifier, cocoop, coop, kgcoop, prograd, tenc_ft, upl  # noqa: F401 (they register)

# isort: on
from .registry import METHODS, PROMPT_MODELS, MethodSpec, register_method, register_model

__all__ = ["METHODS", "PROMPT_MODELS", "MethodSpec", "register_method", "register_model"]
