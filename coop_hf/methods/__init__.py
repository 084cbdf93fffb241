"""The prompt-learning methods, one folder each: its config, its model, its trainer where its update differs, and
the registration of its `--method` names (`coop_hf.methods.registry`). Adding a method is a folder and one import
line below; see the README's "Adding a method".
"""

# Registration order is the order in which `--method` lists the methods.
# isort: off
from . import coop, cocoop, kgcoop, prograd, ivlp, maple, promptsrc  # noqa: F401
from . import clip_lora, clip_adapter, tip_adapter, lp_plus_plus, class_tokens, classifier, tenc_ft, upl  # noqa: F401

# isort: on
from .recipes import PROTOCOLS, Recipe
from .registry import METHODS, PROMPT_MODELS, MethodSpec, register_method, register_model

__all__ = ["METHODS", "PROMPT_MODELS", "PROTOCOLS", "MethodSpec", "Recipe", "register_method", "register_model"]
