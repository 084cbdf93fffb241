"""The registry each method folder adds itself to, as PEFT's tuners do: its models (for the Auto classes and the
saved-prompt loader) and its command-line names (for `--method` in every study).

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
from dataclasses import dataclass, field
from typing import Any

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
            only when a run needs it, so that `import coop_hf` does not load `transformers.Trainer`).
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


PROMPT_MODELS: dict[str, type[PromptPreTrainedModel]] = {}
"""Every prompt model, keyed by its config's `model_type`."""
METHODS: dict[str, MethodSpec] = {}
"""Every `--method` name of a trained method, in registration order."""


def register_model(model_class: type[PromptPreTrainedModel]) -> type[PromptPreTrainedModel]:
    """Make a prompt model loadable by its `model_type`: `AutoConfig`, `AutoModel`,
    `AutoModelForImageClassification` and the runners' saved-prompt loader."""
    model_type = model_class.config_class.model_type
    known = PROMPT_MODELS.get(model_type)
    if known is not None and known is not model_class:
        raise ValueError(
            f"model_type {model_type!r} is registered twice: {known.__name__} and {model_class.__name__}."
        )
    PROMPT_MODELS[model_type] = model_class
    AutoConfig.register(model_type, model_class.config_class, exist_ok=True)
    AutoModel.register(model_class.config_class, model_class, exist_ok=True)
    AutoModelForImageClassification.register(model_class.config_class, model_class, exist_ok=True)
    return model_class


def register_method(name: str, model_class: type[PromptPreTrainedModel], **spec: Any) -> MethodSpec:
    """Add `--method name` (and its model, `register_model`); `spec` holds the other `MethodSpec` fields."""
    if name in METHODS:
        raise ValueError(f"--method {name!r} is registered twice.")
    register_model(model_class)
    METHODS[name] = MethodSpec(name, model_class, **spec)
    return METHODS[name]
