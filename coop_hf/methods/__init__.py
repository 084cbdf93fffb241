"""The prompt-learning methods, one folder each: its config, its model, its trainer where its update differs, its
recipes per protocol and the registration of its `--method` names (`coop_hf.methods.registry`). Every folder here is
found by itself: adding a method is adding its folder (see docs/contributing.md, "Adding a method"), whose
`__init__.py` registers it and may set `ORDER`, where `--method` and the tables list it (default: last).

No folder is imported here: one is when its names are first used (`from coop_hf import CoOpModel`), all of them when
`METHODS` or `PROMPT_MODELS` is first read or `load_methods()` is called.
"""

from .recipes import PROTOCOLS, Recipe
from .registry import METHODS, PROMPT_MODELS, MethodSpec, load_methods, register_method, register_model

__all__ = [
    "METHODS",
    "PROMPT_MODELS",
    "PROTOCOLS",
    "MethodSpec",
    "Recipe",
    "load_methods",
    "register_method",
    "register_model",
]
