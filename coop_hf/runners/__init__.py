"""Study runners: the few-shot protocol, its baselines, UPL and the noisy-label study, as the example scripts run
them. They use the library (`coop_hf`); the library never imports them.

- `experiment`: the backbone/data part (one frozen CLIP, one dataset, test features, few-shot splits);
- `baselines`, `prompt_learning`, `upl`: one runner per kind of method;
- `methods`: the `--method` names; `arguments`: the command-line flags; `records`: what results hold.
"""

from .arguments import (
    ExperimentArguments,
    NoiseStudyArguments,
    PromptArguments,
    SweepArguments,
    UPLArguments,
    prompt_settings,
)
from .experiment import Experiment, LoadedBackbone
from .methods import METHOD_NAMES, PROMPT_METHODS
from .run import load_experiment, run_method

__all__ = [
    "METHOD_NAMES",
    "PROMPT_METHODS",
    "LoadedBackbone",
    "Experiment",
    "ExperimentArguments",
    "NoiseStudyArguments",
    "PromptArguments",
    "SweepArguments",
    "UPLArguments",
    "load_experiment",
    "prompt_settings",
    "run_method",
]
