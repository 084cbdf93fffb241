"""What the runners report: accuracies, the fields of `results.json`, console progress lines."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.trainer_pt_utils import AcceleratorConfig

from ..atomic import atomic_write_text
from ..metrics import ClassificationAccuracy
from ..noise import NoiseReport, NoiseSpec
from ..training import CoOpTrainingArguments

TRAINING_RESULT_KEYS = (
    "accuracy", "accuracy_std", "macro_accuracy", "zeroshot_accuracy", "num_classes", "per_seed",
    "noise_type", "noise_rate_requested", "noise_rate_actual",
)  # fmt: skip
"""Fields of a training run's record that a transfer record replaces with its own (the settings are kept)."""


def dataset_folder(dataset: str) -> str:
    """A folder name for a dataset's outputs: the benchmark name, or the last part of a Hub id or path, file-safe."""
    name = os.path.basename(os.path.normpath(os.path.expanduser(dataset)))
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", name).strip("_.") or "dataset"


def check_dataset_folders(datasets: list[str]) -> None:
    """Refuse datasets that would share an output folder (`dataset_folder`)."""
    folders = [dataset_folder(dataset) for dataset in datasets]
    shared = sorted({folder for folder in folders if folders.count(folder) > 1})
    if shared:
        raise ValueError(f"--dataset names the same folder more than once ({', '.join(shared)}): list each once.")


def shots_text(shots: int) -> str:
    """ "1 shot", "16 shots"."""
    return f"{shots} shot{'' if shots == 1 else 's'}"


def seeds_heading(method: str, dataset: str, shots: int, seed: int, position: int, count: int) -> str:
    """How a seed's console lines start: "coop | caltech101 | 2 shots | seed 1 (1/3)"."""
    return f"{method} | {dataset} | {shots_text(shots)} | seed {seed} ({position}/{count})"


def summary_line(results: dict[str, Any]) -> str:
    """The one line a run ends with: its mean ± std test accuracy over seeds (and zero-shot CLIP's beside it)."""
    seeds = results["seeds"]
    if results["method"] == "zeroshot":
        return (
            f"zeroshot | {results['dataset']}: test accuracy {results['accuracy']:.2f} % with the template, "
            f"{results['accuracy_ensemble']:.2f} % with the {len(results['templates_ensemble'])}-template ensemble"
        )
    accuracy = f"{results['accuracy']:.2f} ± {results['accuracy_std']:.2f} %"
    line = (
        f"{results['method']} | {results['dataset']} | {shots_text(results['shots'])} | {len(seeds)} "
        f"seed{'' if len(seeds) == 1 else 's'}: test accuracy {accuracy}"
    )
    if "zeroshot_accuracy" in results:
        line += f" (zero-shot {results['zeroshot_accuracy']:.2f} %)"
    return line


def seed_mean(per_seed: list[dict[str, Any]], key: str) -> tuple[float, float]:
    """Mean and population standard deviation (ddof 0, as the reference's parser) of `key` over seeds."""
    values = np.array([run[key] for run in per_seed], dtype=float)
    return float(values.mean()), float(values.std())


def accuracy_percent(predictions: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Accuracy and macro accuracy in percent, from logits [N, C] or predicted ids [N]."""
    predictions = np.asarray(predictions)
    predictions = predictions.argmax(-1) if predictions.ndim == 2 else predictions
    scores = ClassificationAccuracy().compute(predictions=predictions, references=np.asarray(labels))
    return {name: 100.0 * value for name, value in scores.items()}


def announce(args: CoOpTrainingArguments, message: str) -> None:
    """One progress line on the console, from the main process."""
    if args.should_log:
        print(f"[coop-hf] {message}", flush=True)


TRAINER_OPTIONS = (
    "label_smoothing_factor",  # the training loss
    "train_sampling_strategy", "data_seed", "dataloader_in_order", "accelerator_config",  # the batches' order
    "ignore_data_skip",  # a resumed run's batches
    "auto_find_batch_size",  # the batch size, after an out-of-memory error
    "dataloader_drop_last",  # drops test and validation images (the training batches follow keep_last_batch)
    "tf32", "fp16_full_eval", "bf16_full_eval",  # the precision
    "load_best_model_at_end", "metric_for_best_model", "greater_is_better",  # which checkpoint is reported
)  # fmt: skip
"""`TrainingArguments` options that change what a run computes, recorded only when set (a run without them keeps the
record it had). CoOpTrainer's own optimizer and schedule make Trainer's (`optim`, `adam_*`, `lr_scheduler_*`,
`warmup_steps`) irrelevant."""


def trainer_options(args: CoOpTrainingArguments) -> dict[str, Any]:
    """The `TRAINER_OPTIONS` that `args` sets to other than their defaults."""
    fields = type(args).__dataclass_fields__
    options = {}
    for name in TRAINER_OPTIONS:
        value, default = getattr(args, name), fields[name].default
        if isinstance(value, AcceleratorConfig):
            value, default = value.to_dict(), AcceleratorConfig().to_dict()
        if value != default:
            options[name] = value
    return options


def training_fields(args: CoOpTrainingArguments, epochs: float) -> dict[str, Any]:
    """The training settings that change a prompt, as a run configuration records them."""
    return {
        "epochs": epochs,
        "max_steps": args.max_steps,
        "learning_rate": args.learning_rate,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "warmup_epochs": args.warmup_epochs,
        "warmup_lr": args.warmup_lr,
        "batch_size": args.global_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "keep_last_batch": args.keep_last_batch,
        "max_grad_norm": args.max_grad_norm,
        "cached_views": args.cached_views,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        # Not a setting of the prompt, but of what the run directory holds (gradient_flow.json per seed).
        **({"gradient_flow": True} if args.gradient_flow else {}),
        **trainer_options(args),
    }


def describe_loss(fields: dict[str, Any]) -> str:
    """ "cross-entropy", or "generalised cross-entropy (q = 0.5)", from `RunSettings.loss_fields`."""
    if fields["loss"] == "gce":
        return f"generalised cross-entropy (q = {fields['gce_q']:g})"
    return "cross-entropy"


def noise_fields(noise: NoiseSpec, report: NoiseReport | None) -> dict[str, Any]:
    """Per-seed noise record: the requested and the actual rate of the seed's noisy train split."""
    if not noise.active:
        return {}
    return {"noise_rate_actual": report.actual_rate, "noisy_shots": report.num_noisy}


def noise_summary(noise: NoiseSpec, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Results-level noise fields: the scheme, the requested rate and the actual rate (mean over seeds)."""
    actual = [run["noise_rate_actual"] for run in per_seed if "noise_rate_actual" in run]
    return {
        "noise_type": noise.noise_type,
        "noise_rate_requested": noise.rate,
        "noise_rate_actual": float(np.mean(actual)) if actual else 0.0,
    }


def write_results(results: dict[str, Any], output_dir: str | os.PathLike) -> Path:
    """Write `output_dir/results.json` atomically."""
    path = Path(output_dir) / "results.json"
    atomic_write_text(path, json.dumps(results, indent=2) + "\n")
    return path
