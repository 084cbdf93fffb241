"""The methods the command line knows: the baselines, and every method registered by its folder
(`coop_hf.methods.registry`)."""

from __future__ import annotations

from ..cli import did_you_mean
from ..methods import METHODS
from .prompt_learning import PromptLearning

BASELINES = ("zeroshot", "linear-probe")

PROMPT_METHODS: dict[str, PromptLearning] = {name: PromptLearning.from_spec(spec) for name, spec in METHODS.items()}
"""Prompt-learning methods by `--method` name: the model class each trains (and its trainer, if not CoOp's)."""

METHOD_NAMES = (*BASELINES, *PROMPT_METHODS)


def prompt_method(name: str) -> PromptLearning:
    """The prompt-learning method a transfer protocol trains (`--method`)."""
    if name not in PROMPT_METHODS:
        raise ValueError(
            f"--method {name!r} learns no prompt to transfer: use one of {', '.join(PROMPT_METHODS)} (zero-shot "
            f"CLIP is reported beside it).{did_you_mean(name, PROMPT_METHODS) if name not in BASELINES else ''}"
        )
    return PROMPT_METHODS[name]
