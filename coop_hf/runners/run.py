"""`run_method`: one method on one dataset over several seeds, as `examples/train.py` runs it."""

from __future__ import annotations

from typing import Any

from ..cli import did_you_mean
from ..training import CoOpTrainingArguments
from .arguments import ExperimentArguments, prompt_settings
from .baselines import run_linear_probe, run_zeroshot
from .experiment import Experiment, LoadedBackbone
from .methods import METHOD_NAMES, PROMPT_METHODS
from .records import announce, summary_line, write_results
from .settings import RunSettings


def load_experiment(experiment: ExperimentArguments, args: CoOpTrainingArguments) -> Experiment:
    """The backbone and dataset the flags name (split files read; nothing encoded yet)."""
    return Experiment.load(
        experiment.model_name_or_path,
        experiment.dataset,
        experiment.data_dir,
        feature_cache_dir=experiment.feature_cache_dir,
        batch_size=args.per_device_eval_batch_size,
    )


def load_experiments(
    arguments: ExperimentArguments, names: list[str], args: CoOpTrainingArguments
) -> list[Experiment]:
    """One experiment per dataset on one backbone (the split files read, so a missing dataset fails at once)."""
    backbone = LoadedBackbone.load(arguments.model_name_or_path, cache_dir=arguments.feature_cache_dir)
    batch_size = args.per_device_eval_batch_size
    return [Experiment(backbone, name, arguments.data_dir, batch_size=batch_size) for name in names]


def run_method(
    experiment: ExperimentArguments, prompt: Any, training_args: CoOpTrainingArguments, callbacks=None
) -> dict[str, Any]:
    """Run `experiment.method` for every seed and write `output_dir/results.json`; `prompt` holds the prompt
    flags (`PromptArguments`)."""
    if experiment.method not in METHOD_NAMES:
        raise ValueError(
            f"Unknown --method {experiment.method!r}: use one of {', '.join(METHOD_NAMES)}."
            + did_you_mean(experiment.method, METHOD_NAMES)
        )
    settings = prompt_settings(prompt, experiment.method)
    run = RunSettings.from_arguments(experiment, callbacks)
    noise = run.noise
    if training_args.gradient_flow and not (experiment.method in PROMPT_METHODS and noise.active and noise.rate > 0):
        raise ValueError(
            "--gradient_flow compares the gradients of clean and noisy training samples: use it with a prompt "
            "--method and label noise (--noise_type replace|symmetric|confusion with --noise_rate above 0)."
        )
    runner = load_experiment(experiment, training_args)
    if experiment.method == "zeroshot":
        results = run_zeroshot(runner, run, training_args)
    elif experiment.method == "linear-probe":
        results = run_linear_probe(runner, run, training_args)
    else:
        results = PROMPT_METHODS[experiment.method].run(runner, run, training_args, settings)
    if training_args.should_save:
        path = write_results(results, training_args.output_dir)
        announce(training_args, f"{summary_line(results)} -> {path}")
    return results
