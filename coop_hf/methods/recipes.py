"""Each method's training recipe per protocol, transcribed from the config files its official repository ships.

A method folder holds its recipes (`<name>/recipes.py`) and registers them; every study names its protocol and the
runner applies that protocol's recipe (explicit flags still win). Where the official repository ships no config
for a protocol, the method names the protocol whose recipe it falls back to (`uses`), never invented values.

```python
# coop_hf/methods/<name>/recipes.py
from ..recipes import Recipe, fallback

RECIPES = {
    "base_to_new": Recipe(training={"learning_rate": 0.0035}, source="owner/repo:configs/b2n.yaml"),
    "few_shot": fallback("base_to_new"),
    "cross_dataset": Recipe(settings={"prompt_depth": 3}, source="owner/repo:configs/xd.yaml"),
    "domain_generalization": fallback("cross_dataset"),
}
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROTOCOLS: dict[str, str] = {
    "few_shot": "few-shot",
    "base_to_new": "base-to-new",
    "cross_dataset": "cross-dataset",
    "domain_generalization": "domain generalisation",
}
"""Every protocol a study runs (key: the name recipes use; value: how tables name it)."""

COOP_SCHEDULE = "CoOp's epochs by shots (1: 50, 2-4: 100, 8-16: 200; ImageNet 50)"
"""What a recipe without `num_train_epochs` trains for (`coop_hf.training.reference_epochs`)."""


@dataclass(frozen=True)
class Recipe:
    """One protocol's training recipe of a method, as its official config gives it.

    Attributes:
        training: `CoOpTrainingArguments` values (learning_rate, num_train_epochs, per_device_train_batch_size,
            ...) replacing those left at their defaults. Without `num_train_epochs`: CoOp's epochs by shots.
        settings: Prompt settings (prompt_depth, gpa_mean, ...) in place of the model config's defaults; prompt
            flags replace them.
        epochs_by_dataset: The config's epochs on particular datasets (ImageNet's 50), in place of `training`'s.
        settings_by_dataset: The config's prompt settings on particular datasets, over `settings`.
        steps_per_shot: Training length in optimizer steps per shot (CLIP-LoRA's 500 x shots), used unless
            --num_train_epochs or --max_steps is given.
        source: The official "owner/repo:path" the values come from, and the script that selects it.
        uses: For a protocol the official repository ships no config for: the protocol whose recipe applies.
        note: What else a reader of the table should know.
    """

    training: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    epochs_by_dataset: dict[str, int] = field(default_factory=dict)
    settings_by_dataset: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps_per_shot: int | None = None
    source: str = ""
    uses: str | None = None
    note: str = ""

    def dataset_settings(self, dataset: str | None) -> dict[str, Any]:
        """The prompt settings on `dataset`: `settings`, then `settings_by_dataset`'s."""
        return {**self.settings, **self.settings_by_dataset.get(dataset, {})}

    def describe(self) -> str:
        """The recipe's values in one line, as flags ("--learning_rate 0.0026 --num_train_epochs 2 ...")."""
        values = [f"--{key} {value}" for key, value in {**self.training, **self.settings}.items()]
        if "num_train_epochs" not in self.training and self.steps_per_shot is None:
            values.append(COOP_SCHEDULE)
        if self.steps_per_shot is not None:
            values.append(f"--max_steps {self.steps_per_shot} x shots")
        values += [f"{dataset}: {epochs} epochs" for dataset, epochs in self.epochs_by_dataset.items()]
        values += [
            f"{dataset}: " + " ".join(f"--{key} {value}" for key, value in settings.items())
            for dataset, settings in self.settings_by_dataset.items()
        ]
        return ", ".join(values)


COOP_RECIPE = Recipe(source="no official config; CoOp's few-shot recipe")
"""The few-shot recipe of a method that registers none (PTNL's models: label noise then trains 50 epochs)."""


def fallback(protocol: str, note: str = "") -> Recipe:
    """The recipe of a protocol the official repository ships no config for: `protocol`'s applies."""
    return Recipe(uses=protocol, note=note)


def resolve_recipes(name: str, recipes: dict[str, Recipe]) -> dict[str, Recipe]:
    """Every protocol's recipe with fallbacks followed (a protocol left out falls back to few-shot's); refuses
    unknown protocols and fallbacks to protocols without a recipe of their own."""
    unknown = sorted(set(recipes) - set(PROTOCOLS))
    if unknown:
        raise ValueError(f"The recipes of method {name!r} name unknown protocols {unknown}: use {list(PROTOCOLS)}.")
    recipes = {"few_shot": COOP_RECIPE, **recipes}
    resolved = {}
    for protocol in PROTOCOLS:
        recipe = recipes.get(protocol, fallback("few_shot"))
        if recipe.uses is not None:
            target = recipes.get(recipe.uses)
            if target is None or target.uses is not None:
                raise ValueError(
                    f"The {protocol} recipe of method {name!r} falls back to {recipe.uses!r}, which has no recipe of "
                    "its own."
                )
            recipe = target
        resolved[protocol] = recipe
    return resolved


def recipe_row(recipes: dict[str, Recipe], protocol: str) -> tuple[str, str]:
    """(values, source) of a protocol's row in the method x protocol table."""
    recipe = {"few_shot": COOP_RECIPE, **recipes}.get(protocol, fallback("few_shot"))
    if recipe.uses is not None:
        own = resolve_recipes("", recipes)[protocol]
        text = f"no official config; uses {PROTOCOLS[recipe.uses]}'s"
        return own.describe(), text + (f" ({recipe.note})" if recipe.note else "")
    return recipe.describe(), recipe.source + (f" ({recipe.note})" if recipe.note else "")
