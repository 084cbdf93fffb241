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
import math
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .. import _method_folders
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
DEFAULT_ORDER = 1000
_PACKAGE = __name__.rpartition(".")[0]  # coop_hf.methods


def _rank_of_folder(folder: str) -> tuple[int, str]:
    """A method folder's place in the listings: its `ORDER` (set in its `__init__.py` before it registers;
    `DEFAULT_ORDER` where it sets none), then its name."""
    return getattr(sys.modules.get(f"{_PACKAGE}.{folder}"), "ORDER", DEFAULT_ORDER), folder


def folder_rank(model_class: type) -> tuple[float, str]:
    """Where the methods of the folder that defines `model_class` are listed (`_rank_of_folder`); a class defined
    outside the method folders is listed last."""
    if not model_class.__module__.startswith(f"{_PACKAGE}."):
        return math.inf, ""
    return _rank_of_folder(model_class.__module__.removeprefix(f"{_PACKAGE}.").split(".")[0])


class Registry(Mapping[str, Entry]):
    """What the method folders registered, by name, in the folders' rank (`folder_rank`) then in registration
    order, whichever folder was imported first. Reading it imports every method folder first (`load_methods`);
    `add`, which `register_method` and `register_model` call, does not."""

    def __init__(self, model_class_of: Callable[[Entry], type]) -> None:
        self.registered: dict[str, Entry] = {}
        self.model_class_of = model_class_of
        self._adding = threading.Lock()  # two threads importing two folders add at once

    def add(self, name: str, entry: Entry) -> None:
        """Register `entry` as `name`, in its place in the order."""
        with self._adding:
            entries = {**self.registered, name: entry}.items()
            self.registered = dict(sorted(entries, key=lambda item: folder_rank(self.model_class_of(item[1]))))

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


PROMPT_MODELS: Registry[type[PromptPreTrainedModel]] = Registry(lambda model_class: model_class)
"""Every prompt model, keyed by its config's `model_type`."""
METHODS: Registry[MethodSpec] = Registry(lambda spec: spec.model_class)
"""Every `--method` name of a trained method."""

_loading = threading.RLock()
_loaded_folders: tuple[str, ...] | None = None


def method_folders() -> list[str]:
    """The method folders' names, found without importing them."""
    return [folder.name for folder in _method_folders()]


def load_methods() -> tuple[str, ...]:
    """Import every method folder, once: each registers its `--method` names and its models, which the Auto classes
    (`AutoConfig`, `AutoModel`, `AutoModelForImageClassification`, hence `pipeline`) then load by `model_type`.
    Returns the folders in their rank (`ORDER`, which a folder's `__init__.py` may set, where `--method` and the
    tables list its methods; default last). A folder that fails to import fails this call and the next, until it is
    mended; one that reads the registries while the folders import is refused (they are not complete yet, and a
    thread importing that folder alone would wait on this one)."""
    global _loaded_folders
    with _loading:  # another thread waits for the whole list
        if _loaded_folders == ():
            raise RuntimeError(
                "a method folder read METHODS or PROMPT_MODELS while the method folders were importing: a folder "
                "must not read the registries (or import what does, as coop_hf.runners) when it is imported."
            )
        if _loaded_folders is None:
            _loaded_folders = ()
            try:
                folders = method_folders()
                for folder in folders:
                    importlib.import_module(f"{_PACKAGE}.{folder}")
            except BaseException:
                _loaded_folders = None
                raise
            _loaded_folders = tuple(sorted(folders, key=_rank_of_folder))
    return _loaded_folders


def _same_definition(known: type, model_class: type) -> bool:
    """Whether `model_class` is `known`, or `known` defined anew (its module imported again after its first import
    failed): the same module and qualified name."""
    return (known.__module__, known.__qualname__) == (model_class.__module__, model_class.__qualname__)


def register_model(model_class: type[PromptPreTrainedModel]) -> type[PromptPreTrainedModel]:
    """Make a prompt model loadable by its `model_type`: `AutoConfig`, `AutoModel`,
    `AutoModelForImageClassification` and the runners' saved-prompt loader."""
    model_type = model_class.config_class.model_type
    known = PROMPT_MODELS.registered.get(model_type)
    if known is not None and not _same_definition(known, model_class):
        raise ValueError(
            f"model_type {model_type!r} is registered twice: {known.__name__} and {model_class.__name__}."
        )
    PROMPT_MODELS.add(model_type, model_class)
    AutoConfig.register(model_type, model_class.config_class, exist_ok=True)
    AutoModel.register(model_class.config_class, model_class, exist_ok=True)
    AutoModelForImageClassification.register(model_class.config_class, model_class, exist_ok=True)
    return model_class


def register_method(name: str, model_class: type[PromptPreTrainedModel], **spec: Any) -> MethodSpec:
    """Add `--method name` (and its model, `register_model`); `spec` holds the other `MethodSpec` fields."""
    known = METHODS.registered.get(name)
    if known is not None and (
        known.model_class is model_class or not _same_definition(known.model_class, model_class)
    ):
        raise ValueError(f"--method {name!r} is registered twice.")
    register_model(model_class)
    method = MethodSpec(name, model_class, **spec)
    METHODS.add(name, method)
    return method
