"""The prompt-learning methods, one folder each: its config, its model, its trainer where its update differs, its
recipes per protocol and the registration of its `--method` names (`coop_hf.methods.registry`). Every folder here is
found and imported by itself: adding a method is adding its folder (see the README's "Adding a method"), whose
`__init__.py` registers it and may set `ORDER`, where `--method` and the tables list it (default: last).
"""

import importlib
import pkgutil

from .recipes import PROTOCOLS, Recipe
from .registry import METHODS, PROMPT_MODELS, MethodSpec, register_method, register_model

DEFAULT_ORDER = 1000


def _import_method_folders() -> list[str]:
    """Import every method folder (each registers its methods), then list the methods in their folders' `ORDER`.
    Returns the folders in that order."""
    folders = sorted(name for _, name, is_package in pkgutil.iter_modules(__path__) if is_package)
    order = {name: getattr(importlib.import_module(f"{__name__}.{name}"), "ORDER", DEFAULT_ORDER) for name in folders}

    def rank(spec: MethodSpec) -> int:
        folder = spec.model_class.__module__.removeprefix(f"{__name__}.").split(".")[0]
        return order.get(folder, DEFAULT_ORDER)

    listed = sorted(METHODS.values(), key=rank)  # stable: a folder's methods keep their registration order
    METHODS.clear()
    METHODS.update((spec.name, spec) for spec in listed)
    return sorted(folders, key=order.__getitem__)


FOLDERS = _import_method_folders()
"""The method folders, in their `ORDER`."""

__all__ = ["METHODS", "PROMPT_MODELS", "PROTOCOLS", "MethodSpec", "Recipe", "register_method", "register_model"]
