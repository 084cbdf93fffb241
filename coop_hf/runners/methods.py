"""The methods the command line knows: the baselines, and one entry per prompt-learning method."""

from __future__ import annotations

from ..methods.coop import CoOpModel
from .prompt_learning import PromptLearning

BASELINES = ("zeroshot", "linear-probe")

PROMPT_METHODS: dict[str, PromptLearning] = {
    method.name: method
    for method in (
        PromptLearning("coop", CoOpModel),
    )
}
"""Prompt-learning methods by `--method` name: the model class each trains (and its trainer, if not CoOp's)."""

METHOD_NAMES = (*BASELINES, *PROMPT_METHODS)
