"""Domain generalisation and cross-dataset transfer (`examples/transfer.py`): a prompt trained on a source dataset,
evaluated on target datasets over their own class names (CoOp's Table 1, CoCoOp's Table 2)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_directory, atomic_write_text
from ..methods.recipes import PROTOCOLS
from ..training import CoOpTrainingArguments
from .arguments import ExperimentArguments, prompt_settings
from .evaluation import evaluate_prompt, load_seed_prompt
from .experiment import Experiment
from .methods import prompt_method
from .prompt_learning import PromptLearning
from .records import TRAINING_RESULT_KEYS, announce, seed_mean, shots_text, write_results
from .reporting import dataset_title, evaluation_text, model_text, seeds_text, zero_shot_label
from .run import load_experiments
from .settings import RunSettings
from .shard import Shard, ShardArguments

DG_TARGETS = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")
"""The ImageNet variants of CoOp's domain-generalisation table (ImageNet is the source)."""


@dataclass
class TransferArguments(ShardArguments, ExperimentArguments):
    """Domain generalisation / cross-dataset transfer (`examples/transfer.py`): `examples/train.py`'s experiment
    flags, the dataset being the source, plus the targets."""

    dataset: str = field(
        default="imagenet",
        metadata={
            "aliases": ["--source"],
            "help": "The source dataset the prompt is trained on: a CoOp benchmark name (with --data_dir) or a Hub "
            "id / local image-classification dataset.",
        },
    )
    targets: list[str] = field(
        default_factory=lambda: list(DG_TARGETS),
        metadata={
            "help": "Datasets the trained prompt is tested on, each over its own class names: the ImageNet variants "
            "(domain generalisation) and/or other datasets (cross-dataset transfer)."
        },
    )


def transfer_protocol(source: str, targets: list[str]) -> str:
    """The protocol of a source and its targets: "domain generalisation" from ImageNet to its variants (CoOp's
    Table 1), else "cross-dataset" (CoCoOp's Table 2, with an average over the targets)."""
    return "domain generalisation" if source == "imagenet" and set(targets) <= set(DG_TARGETS) else "cross-dataset"


def recipe_protocol(source: str, targets: list[str]) -> str:
    """The protocol whose recipe a transfer study applies: "domain_generalization" or "cross_dataset"
    (`coop_hf.methods.recipes.PROTOCOLS`)."""
    return {title: name for name, title in PROTOCOLS.items()}[transfer_protocol(source, targets)]


def run_transfer(
    source: Experiment,
    targets: list[Experiment],
    method: PromptLearning,
    run: RunSettings,
    args: CoOpTrainingArguments,
    prompt: dict[str, Any],
    shard: Shard | None = None,
) -> dict[str, Any] | None:
    """Train one prompt per seed on the source's few-shot splits (`args.output_dir/seed<N>`, resumable as
    `train.py`), test it on the source's test split, then on every target's test split over the target's own class
    names, under `run.protocol`'s recipe. The record holds per dataset the mean (and per seed) accuracy and
    zero-shot CLIP's. With a `shard`, only
    its share of the seeds is trained (and nothing evaluated): None."""
    planned = method.plan(source, run, args, prompt)
    if getattr(planned.prompt_config, "class_specific_context", False):
        other = [target.dataset for target in targets if target.classnames != source.classnames]
        if other:
            raise ValueError(
                f"--class_specific_context true learns one context per {source.dataset} class, which cannot move to "
                f"the class lists of {', '.join(other)}: train a unified context (--class_specific_context false), "
                "or keep to --targets with the source's class list."
            )
    if shard is not None:
        seeds = shard.select(run.seeds)
        if seeds:
            method.plan(source, run.replace(seeds=seeds), args, prompt).execute()
        announce(args, shard.finished_message(len(seeds), len(run.seeds), "seeds' prompts"))
        return None
    trained = planned.execute()
    with args.main_process_first(desc="trained prompts"):  # the main process saved them
        prompts = [
            (seed, load_seed_prompt(method, source, Path(args.output_dir) / f"seed{seed}")) for seed in run.seeds
        ]
    target_records = []
    for target in targets:
        per_seed = [{"seed": seed, **evaluate_prompt(model, target)} for seed, model in prompts]
        accuracy, accuracy_std = seed_mean(per_seed, "accuracy")
        announce(args, f"transfer | {source.dataset} -> {target.dataset}: test accuracy {accuracy:.2f} %")
        target_records.append(
            {
                "dataset": target.dataset,
                "num_classes": len(target.classnames),
                "num_test_images": len(target.test["labels"]),
                "splits_fingerprint": target.splits_fingerprint,
                "accuracy": accuracy,
                "accuracy_std": accuracy_std,
                "macro_accuracy": seed_mean(per_seed, "macro_accuracy")[0],
                "zeroshot_accuracy": target.zeroshot["accuracy"],
                "per_seed": per_seed,
            }
        )
    protocol = transfer_protocol(source.dataset, [target.dataset for target in targets])
    record = {
        "protocol": protocol,
        **{key: value for key, value in trained.items() if key not in (*TRAINING_RESULT_KEYS, "dataset")},
        "source": {
            "dataset": source.dataset,
            "num_classes": len(source.classnames),
            "num_test_images": len(source.test["labels"]),
            "splits_fingerprint": source.splits_fingerprint,
            **{key: trained[key] for key in TRAINING_RESULT_KEYS if key in trained and key != "num_classes"},
        },
        "targets": target_records,
    }
    if protocol == "cross-dataset":
        record["average"] = {
            key: float(np.mean([target[key] for target in target_records]))
            for key in ("accuracy", "zeroshot_accuracy")
        }
    return record


def transfer_table(record: dict[str, Any], method_name: str, *, note: str | None = None) -> str:
    """Markdown table in the layout of the CoOp / CoCoOp papers: the source, then every target (and, for
    cross-dataset transfer, the average over the targets, the source excluded); zero-shot CLIP and the method. With
    a `note`, the method's row is marked † and the note follows the table."""
    source, targets = record["source"], record["targets"]
    cross_dataset = record["protocol"] == "cross-dataset"
    header = [f"Source: {dataset_title(source['dataset'])}"]
    header += [f"Target: {dataset_title(target['dataset'])}" for target in targets]
    header += ["Average (targets)"] if cross_dataset else []
    rows = []
    marked = method_name + (" †" if note else "")
    columns = {}
    for key in ("zeroshot_accuracy", "accuracy"):
        columns[key] = [source[key], *(target[key] for target in targets)]
        columns[key] += [record["average"][key]] if cross_dataset else []
    for label, learnable, key in ((zero_shot_label(record), "", "zeroshot_accuracy"), (marked, "✓", "accuracy")):
        rows.append(f"| {label} | {learnable} | " + " | ".join(f"{value:.2f}" for value in columns[key]) + " |")
    changes = [after - before for before, after in zip(columns["zeroshot_accuracy"], columns["accuracy"], strict=True)]
    rows.append("| Change vs zero-shot |  | " + " | ".join(f"{change:+.2f}" for change in changes) + " |")
    caption = (
        f"{record['protocol'].capitalize()} ({model_text(record)}): {method_name} trained on "
        f"{dataset_title(source['dataset'])} ({shots_text(record['shots'])}, {seeds_text(record)}; mean over "
        "seeds), tested on each target's test split over the target's own class names. Accuracy in %; the last row "
        "is the method's change against zero-shot (points)."
        + (" " + evaluation_text(record.get("evaluation"))).rstrip()
    )
    lines = [
        caption,
        "",
        "| Method | Learnable? | " + " | ".join(header) + " |",
        "|---|:---:|" + "---:|" * len(header),
    ]
    return "\n".join([*lines, *rows, *(["", note] if note else [])]) + "\n"


def plot_transfer(record: dict[str, Any], method_name: str, path: str | os.PathLike) -> Path:
    """Paired bars per dataset (the source, each target, and the targets' average for cross-dataset transfer):
    zero-shot CLIP (hatched) and the method, with the method's std over seeds."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    source, targets = record["source"], record["targets"]
    columns = [(f"{dataset_title(source['dataset'])}\n(source)", source), *(
        (dataset_title(target["dataset"]), target) for target in targets
    )]  # fmt: skip
    if record["protocol"] == "cross-dataset":
        columns.append(("Average\n(targets)", {**record["average"], "accuracy_std": None}))
    colour, width = "#4C72B0", 0.38
    figure = Figure(figsize=(max(5.5, 1.1 * len(columns) + 1.5), 4.4), layout="constrained")
    axes = figure.add_subplot()
    top = max(max(values["accuracy"], values["zeroshot_accuracy"]) for _, values in columns)
    for x, (_, values) in enumerate(columns):
        axes.bar(x - width / 2, values["zeroshot_accuracy"], width, facecolor="white", edgecolor=colour, hatch="////")
        axes.bar(x + width / 2, values["accuracy"], width, color=colour, yerr=values.get("accuracy_std"), capsize=3)
        std = values.get("accuracy_std") or 0.0
        labels = ((-width / 2, values["zeroshot_accuracy"], 0.0), (width / 2, values["accuracy"], std))
        for offset, value, above in labels:
            axes.text(x + offset, value + above + top * 0.02, f"{value:.1f}", ha="center", va="bottom", fontsize=7)
    axes.set_xticks(range(len(columns)), [name for name, _ in columns])
    axes.set_ylabel("Accuracy (%)")
    top += max(values.get("accuracy_std") or 0.0 for _, values in columns)
    axes.set_ylim(0, top * 1.2 if top > 0 else 1)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    figure.suptitle(
        f"{record['protocol'].capitalize()}: {method_name} trained on {dataset_title(source['dataset'])}\n"
        f"{model_text(record)}, {shots_text(record['shots'])}, {seeds_text(record)}",
        fontsize=11,
    )
    handles = [
        Patch(facecolor="white", edgecolor=colour, hatch="////", label=zero_shot_label(record)),
        Patch(facecolor=colour, label=method_name),
    ]
    axes.legend(handles=handles, ncols=2, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8, frameon=False)
    with atomic_directory(Path(path).parent) as staging:
        figure.savefig(staging / Path(path).name, dpi=150)
    return Path(path)


def transfer_study(
    arguments: TransferArguments, prompt: Any, training_args: CoOpTrainingArguments, callbacks: list | None = None
) -> dict[str, Any]:
    """`run_transfer` from `arguments.dataset` (the source) to `arguments.targets`; writes
    `output_dir/results.json`, the table `output_dir/results.md` and the plot `output_dir/transfer.png`."""
    method = prompt_method(arguments.method)
    settings = prompt_settings(prompt, arguments.method)
    source, *targets = load_experiments(arguments, [arguments.dataset, *arguments.targets], training_args)
    protocol = recipe_protocol(arguments.dataset, arguments.targets)
    run = RunSettings.from_arguments(arguments, callbacks, protocol=protocol)
    shard = Shard.parse(arguments.shard, overwrite=training_args.overwrite_output_dir)
    record = run_transfer(source, targets, method, run, training_args, settings, shard)
    if record is None:
        return {}
    if training_args.should_save:
        write_results(record, training_args.output_dir)
        # domain generalisation keeps the source's classes; cross-dataset targets have others
        cross_dataset = record["protocol"] == "cross-dataset"
        note = method.zero_shot_note("the targets' classes") if cross_dataset else None
        table = transfer_table(record, method.display_name, note=note)
        atomic_write_text(Path(training_args.output_dir) / "results.md", table)
        plot_transfer(record, method.display_name, Path(training_args.output_dir) / "transfer.png")
    return record
