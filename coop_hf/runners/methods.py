"""The methods the command line knows: the baselines, and every method registered by its folder
(`coop_hf.methods.registry`)."""

from __future__ import annotations

from ..methods import METHODS
from .prompt_learning import PromptLearning

BASELINES = ("zeroshot", "linear-probe")

PROMPT_METHODS: dict[str, PromptLearning] = {name: PromptLearning.from_spec(spec) for name, spec in METHODS.items()}
"""Prompt-learning methods by `--method` name: the model class each trains (and its trainer, if not CoOp's)."""

METHOD_NAMES = (*BASELINES, *PROMPT_METHODS)
