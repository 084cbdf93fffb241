"""The registry each method folder adds itself to, as PEFT's tuners do: its models (for the Auto classes and the
saved-prompt loader) and its command-line names (for `--method` in every study).

A folder registers when it is imported, and only then: `from coop_hf import CoOpModel` imports CoOp's folder alone.
Reading `METHODS` or `PROMPT_MODELS` imports every folder first (`load_methods`), so that they list them all.

```python
# coop_hf/methods/<name>/__init__.py
from ..registry import register_method
from .modeling_<name> import MyModel

register_method("my-method", MyModel, recipes={"few_shot": Recipe(training={"num_train_epochs": 10})})
```

Each protocol's recipe (`coop_hf.methods.recipes`) lives in the method's folder (`<name>/recipes.py`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from ..modeling_utils import PromptPreTrainedModel
from .recipes import Recipe, resolve_recipes


@dataclass(frozen=True)
class MethodSpec:
    """A `--method` name: the model it trains and how.

    Attributes:
        name: The command-line name (`--method <name>`).
        model_class: The [`PromptPreTrainedModel`] it trains.
        trainer: Its trainer when its update differs from `CoOpTrainer`'s: the class, or "module:Class" (imported
            only when a run needs it, so that importing the method does not load `transformers.Trainer`).
        fitted: Whether it is fitted on cached image features by its trainer's own `train` (a `FeatureFitTrainer`:
            Tip-Adapter, LP++) instead of trained step by step on pixels by Trainer's loop.
        recipes: Its training recipe per protocol ("few_shot", "base_to_new", "cross_dataset",
            "domain_generalization"), from its official configs: training defaults, prompt settings and their
            source; a protocol left out falls back to few-shot's, and few-shot's to CoOp's.
        settings: Prompt settings that make this name the method it is where model classes are shared
            (CLS-Tuning's `{"learn_context": False}`); a flag contradicting them is an error.
        defaults: The name's own defaults of other prompt settings, which flags may replace.
        label: How tables and plots name it (default: the model's `method_name`).
    """

    name: str
    model_class: type[PromptPreTrainedModel]
    trainer: str | type | None = None
    recipes: dict[str, Recipe] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    fitted: bool = False

    def __post_init__(self):
        resolve_recipes(self.name, self.recipes)  # refuses unknown protocols and fallbacks to nothing

    @property
    def trainer_class(self) -> type:
        """The trainer class: `trainer`, imported where it is named as "module:Class", or `CoOpTrainer`."""
        trainer = self.trainer or "coop_hf.training:CoOpTrainer"
        if not isinstance(trainer, str):
            return trainer
        module, _, name = trainer.partition(":")
        return getattr(importlib.import_module(module), name)


Entry = TypeVar("Entry")


class Registry(Mapping[str, Entry]):
    """What the method folders registered, by name. Reading it imports every method folder first (`load_methods`);
    `register_method` and `register_model` add to it without doing so."""

    def __init__(self) -> None:
        self.registered: dict[str, Entry] = {}

    def __getitem__(self, name: str) -> Entry:
        load_methods()
        return self.registered[name]

    def __iter__(self) -> Iterator[str]:
        load_methods()
        return iter(self.registered)

    def __len__(self) -> int:
        load_methods()
        return len(self.registered)

    def __repr__(self) -> str:
        return f"Registry({list(self)})"


PROMPT_MODELS: Registry[type[PromptPreTrainedModel]] = Registry()
"""Every prompt model, keyed by its config's `model_type`."""
METHODS: Registry[MethodSpec] = Registry()
"""Every `--method` name of a trained method, in its folder's `ORDER`, then in registration order."""

DEFAULT_ORDER = 1000
_loaded_folders: tuple[str, ...] | None = None


def method_folders() -> list[str]:
    """The method folders' names, found without importing them."""
    return sorted(name for _, name, is_package in pkgutil.iter_modules([str(Path(__file__).parent)]) if is_package)


def load_methods() -> tuple[str, ...]:
    """Import every method folder, once: each registers its `--method` names and its models, which the Auto classes
    (`AutoConfig`, `AutoModel`, `AutoModelForImageClassification`, hence `pipeline`) then load by `model_type`.
    `METHODS` is put in the folders' `ORDER` (a folder's `__init__` may set it, where `--method` and the tables list
    its methods; default last). Returns the folders in that order."""
    global _loaded_folders
    if _loaded_folders is None:
        _loaded_folders = ()  # the registries read while the folders import list what is registered so far
        package = __name__.rpartition(".")[0]
        order = {
            folder: getattr(importlib.import_module(f"{package}.{folder}"), "ORDER", DEFAULT_ORDER)
            for folder in method_folders()
        }

        def rank(spec: MethodSpec) -> int:
            return order.get(spec.model_class.__module__.removeprefix(f"{package}.").split(".")[0], DEFAULT_ORDER)

        listed = sorted(METHODS.registered.values(), key=rank)  # stable: a folder's methods keep their order
        METHODS.registered = {spec.name: spec for spec in listed}
        _loaded_folders = tuple(sorted(order, key=order.__getitem__))
    return _loaded_folders


def register_model(model_class: type[PromptPreTrainedModel]) -> type[PromptPreTrainedModel]:
    """Make a prompt model loadable by its `model_type`: `AutoConfig`, `AutoModel`,
    `AutoModelForImageClassification` and the runners' saved-prompt loader."""
    model_type = model_class.config_class.model_type
    known = PROMPT_MODELS.registered.get(model_type)
    if known is not None and known is not model_class:
        raise ValueError(
            f"model_type {model_type!r} is registered twice: {known.__name__} and {model_class.__name__}."
        )
    PROMPT_MODELS.registered[model_type] = model_class
    AutoConfig.register(model_type, model_class.config_class, exist_ok=True)
    AutoModel.register(model_class.config_class, model_class, exist_ok=True)
    AutoModelForImageClassification.register(model_class.config_class, model_class, exist_ok=True)
    return model_class


def register_method(name: str, model_class: type[PromptPreTrainedModel], **spec: Any) -> MethodSpec:
    """Add `--method name` (and its model, `register_model`); `spec` holds the other `MethodSpec` fields."""
    if name in METHODS.registered:
        raise ValueError(f"--method {name!r} is registered twice.")
    register_model(model_class)
    METHODS.registered[name] = MethodSpec(name, model_class, **spec)
    return METHODS.registered[name]
