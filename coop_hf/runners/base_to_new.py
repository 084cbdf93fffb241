"""CoCoOp's base-to-new generalisation (`examples/base_to_new.py`): a prompt trained on a dataset's base classes,
tested on them and, moved to the new class names, on the new classes."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from ..atomic import atomic_directory, atomic_write_text
from ..data.records import column_values
from ..data.subsample import subsample_classes, subsample_labels
from ..hub import CardResults
from ..noise import NO_NOISE, NoiseReport, NoiseSpec
from ..run_directory import splits_fingerprint
from ..training import CoOpTrainingArguments
from .arguments import SeveralDatasetsArguments, prompt_settings
from .evaluation import evaluate_prompt, load_seed_prompt
from .experiment import Experiment
from .methods import prompt_method
from .prompt_learning import PromptLearning
from .records import (
    TRAINING_RESULT_KEYS,
    announce,
    check_dataset_folders,
    dataset_folder,
    seed_mean,
    shots_text,
    write_results,
)
from .reporting import dataset_title, evaluation_text, model_text, seeds_text, zero_shot_label
from .run import load_experiments
from .settings import RunSettings
from .shard import Shard, ShardArguments

BASE_TO_NEW_CTX_INIT = "a photo of a"
"""The reference's base-to-new CoOp config (`vit_b16_ctxv1`) initialises the context from this phrase (n_ctx 4)."""


def harmonic_mean(base: float, new: float) -> float:
    """H = 2 B N / (B + N), CoCoOp's summary of base and new accuracy (0 when both are 0)."""
    return 2 * base * new / (base + new) if base + new else 0.0


class ClassSubset(Experiment):
    """The base or new classes of an experiment, as CoCoOp's base-to-new protocol uses them.

    Its few-shot splits are the source experiment's all-class draw (train K, val min(K, 4), one stream), then
    subsampled (`coop_hf.data.subsample`), so a seed's base shots are exactly its all-class shots of the base
    classes. The test features are the source's, restricted to the selected classes and relabelled; zero-shot
    CLIP is evaluated over the selected class names only.
    """

    def __init__(self, source: Experiment, subsample: str):
        self.source = source
        self.subsample = subsample
        self.backbone, self.dataset, self.batch_size = source.backbone, source.dataset, source.batch_size
        self.template = source.template
        train = source.splits["train"] if "train" in source.splits else next(iter(source.splits.values()))
        self.labels = subsample_labels(column_values(train, "label"), subsample)
        self.classnames = [source.classnames[label] for label in self.labels]

    @cached_property
    def splits(self) -> datasets.DatasetDict:
        return subsample_classes(self.source.splits, self.subsample)[0]

    @cached_property
    def splits_fingerprint(self) -> str:
        return splits_fingerprint(self.splits)

    @cached_property
    def test(self) -> dict[str, torch.Tensor]:
        test = self.source.test
        rank = torch.full((len(self.source.classnames),), -1, dtype=torch.long)
        rank[self.labels] = torch.arange(len(self.labels))
        labels = rank[test["labels"].long()]
        keep = labels >= 0
        return {"image_embeds": test["image_embeds"][keep], "labels": labels[keep]}

    def run_config(self, method: str, **fields: Any) -> dict[str, Any]:
        config = super().run_config(method, **fields)
        config["dataset"]["classes"] = self.subsample
        return config

    def few_shot(
        self,
        shots: int,
        seed: int,
        *,
        noise: NoiseSpec = NO_NOISE,
        allow_fewer: bool = False,
        shots_per_class: list[int] | None = None,
    ) -> tuple[datasets.DatasetDict, NoiseReport | None]:
        """The source's all-class draw subsampled, as the reference; under the realistic protocol
        (`shots_per_class`, one count per class of this subset) a long-tailed draw from this subset's splits."""
        if noise.active:
            raise ValueError("Label noise is not part of the base-to-new protocol: drop --noise_type / --noise_rate.")
        if shots_per_class is not None:
            return super().few_shot(shots, seed, allow_fewer=allow_fewer, shots_per_class=shots_per_class)
        splits, _ = self.source.few_shot(shots, seed, allow_fewer=allow_fewer)
        subsampled, classnames = subsample_classes(splits, self.subsample)
        if classnames != self.classnames:
            raise ValueError(
                f"The {shots}-shot train split of seed {seed} lacks classes of the {self.dataset} train split, so its "
                f"{self.subsample} classes differ from the dataset's."
            )
        return subsampled, None

    def card_results(self, accuracy: float, label: str, **kwargs) -> CardResults:
        card = super().card_results(accuracy, label, **kwargs)
        count = f"{len(self.classnames)} of {len(self.source.classnames)}"
        card.dataset_name = f"{self.dataset} ({self.subsample} classes)"
        card.description += f" Base-to-new protocol: trained and tested on the {self.subsample} classes ({count})."
        return card


def _base_to_new_settings(method: PromptLearning, settings: dict[str, Any]) -> dict[str, Any]:
    """The reference's base-to-new prompt ("a photo of a" context) when no context flag is given."""
    own = method.model_class.config_class.prompt_settings()
    if "ctx_init" in own and not settings.keys() & {"n_ctx", "ctx_init", "class_specific_context"}:
        default = method.model_class.config_class.__dataclass_fields__["ctx_init"].default
        if default is None:
            return {**settings, "ctx_init": BASE_TO_NEW_CTX_INIT}
    return settings


def run_base_to_new(
    experiment: Experiment,
    method: PromptLearning,
    run: RunSettings,
    args: CoOpTrainingArguments,
    prompt: dict[str, Any],
) -> dict[str, Any]:
    """CoCoOp's protocol on one dataset: per seed, train a prompt on the base classes (`args.output_dir/seed<N>`,
    resumable as `train.py`), test it on the base classes' test images over the base class names, then move it to
    the new class names and test it on the new classes' test images. The record holds base and new accuracy and
    their harmonic mean per seed and over seeds (H of the seed means, as the paper reports it), and zero-shot
    CLIP's on the same splits."""
    base, new = ClassSubset(experiment, "base"), ClassSubset(experiment, "new")
    trained = method.run(base, run, args, prompt)
    per_seed = []
    for run in trained["per_seed"]:
        with args.main_process_first(desc="new-class evaluation"):  # the main process saved the prompt
            model = load_seed_prompt(method, base, Path(args.output_dir) / f"seed{run['seed']}")
        scores = evaluate_prompt(model, new)
        result = {
            "seed": run["seed"],
            "base_accuracy": run["accuracy"],
            "new_accuracy": scores["accuracy"],
            "harmonic_mean": harmonic_mean(run["accuracy"], scores["accuracy"]),
            "base_macro_accuracy": run["macro_accuracy"],
            "new_macro_accuracy": scores["macro_accuracy"],
            **{key: run[key] for key in ("shots_per_class",) if key in run},  # the realistic protocol's draw
        }
        announce(
            args,
            f"base-to-new | {experiment.dataset} | seed {run['seed']}: base {result['base_accuracy']:.2f} %, "
            f"new {result['new_accuracy']:.2f} %, H {result['harmonic_mean']:.2f}",
        )
        per_seed.append(result)
    base_accuracy, base_std = seed_mean(per_seed, "base_accuracy")
    new_accuracy, new_std = seed_mean(per_seed, "new_accuracy")
    zeroshot_base, zeroshot_new = base.zeroshot["accuracy"], new.zeroshot["accuracy"]
    return {
        "protocol": "base-to-new",
        **{key: value for key, value in trained.items() if key not in TRAINING_RESULT_KEYS},
        "num_classes": len(experiment.classnames),
        "base_classes": base.classnames,
        "new_classes": new.classnames,
        "num_test_images": {"base": len(base.test["labels"]), "new": len(new.test["labels"])},
        "base_accuracy": base_accuracy,
        "base_accuracy_std": base_std,
        "new_accuracy": new_accuracy,
        "new_accuracy_std": new_std,
        "harmonic_mean": harmonic_mean(base_accuracy, new_accuracy),
        "zeroshot_base_accuracy": zeroshot_base,
        "zeroshot_new_accuracy": zeroshot_new,
        "zeroshot_harmonic_mean": harmonic_mean(zeroshot_base, zeroshot_new),
        "per_seed": per_seed,
    }


@dataclass
class BaseToNewArguments(ShardArguments, SeveralDatasetsArguments):
    """The base-to-new protocol of `examples/base_to_new.py`: `examples/train.py`'s experiment flags, with several
    datasets, each in its own folder output_dir/<dataset>."""


def base_to_new_study(
    arguments: BaseToNewArguments, prompt: Any, training_args: CoOpTrainingArguments, callbacks: list | None = None
) -> list[dict[str, Any]]:
    """`run_base_to_new` on every dataset of `arguments.dataset`, each in `output_dir/<dataset>` (with its
    results.json), then the table `output_dir/results.md` and the bar plot `output_dir/base_to_new.png`."""
    method = prompt_method(arguments.method)
    if training_args.push_to_hub:
        raise ValueError(
            "base_to_new.py does not push its base-class prompts (drop --push_to_hub); push one from "
            "output_dir/<dataset>/seed<N> with CoOpModel.from_pretrained(...).push_to_hub(...)."
        )
    check_dataset_folders(arguments.dataset)
    run = RunSettings.from_arguments(arguments, callbacks, protocol="base_to_new")
    if run.noise.active:
        raise ValueError("Label noise is not part of the base-to-new protocol: drop --noise_type / --noise_rate.")
    settings = _base_to_new_settings(method, prompt_settings(prompt, arguments.method))
    shard = Shard.parse(arguments.shard, overwrite=training_args.overwrite_output_dir)
    experiments = load_experiments(arguments, arguments.dataset, training_args)
    if shard is not None:  # its share of the (dataset, seed) pairs: their base-class prompts
        units = shard.select([(experiment, seed) for experiment in experiments for seed in run.seeds])
        for experiment in experiments:
            seeds = [seed for owner, seed in units if owner is experiment]
            if seeds:
                output_dir = Path(training_args.output_dir) / dataset_folder(experiment.dataset)
                args = dataclasses.replace(training_args, output_dir=str(output_dir))
                method.run(ClassSubset(experiment, "base"), run.replace(seeds=seeds), args, settings)
        announce(training_args, shard.finished_message(len(units), len(experiments) * len(run.seeds), "prompts"))
        return []
    records = []
    for experiment in experiments:
        output_dir = Path(training_args.output_dir) / dataset_folder(experiment.dataset)
        args = dataclasses.replace(training_args, output_dir=str(output_dir))
        record = run_base_to_new(experiment, method, run, args, settings)
        if args.should_save:
            write_results(record, output_dir)
        records.append(record)
    if training_args.should_save:
        output_dir = Path(training_args.output_dir)
        note = method.zero_shot_note("the new classes")
        atomic_write_text(output_dir / "results.md", base_to_new_table(records, method.display_name, note=note))
        plot_base_to_new(records, method.display_name, output_dir / "base_to_new.png")
    return records


def base_to_new_rows(records: list[dict[str, Any]]) -> list[tuple[str, dict[str, tuple[float, float, float]]]]:
    """(dataset, {"zeroshot": (B, N, H), "method": (B, N, H)}) per dataset, the average first when there are
    several: its B and N are the means over datasets and its H the harmonic mean of those (CoCoOp's Table 1)."""
    rows = [
        (
            dataset_title(record["dataset"]),
            {
                "zeroshot": (record["zeroshot_base_accuracy"], record["zeroshot_new_accuracy"]),
                "method": (record["base_accuracy"], record["new_accuracy"]),
            },
        )
        for record in records
    ]
    if len(records) > 1:
        average = {
            kind: tuple(float(np.mean([row[kind][i] for _, row in rows])) for i in (0, 1)) for kind in rows[0][1]
        }
        rows.insert(0, (f"Average over {len(records)} datasets", average))
    return [(name, {kind: (b, n, harmonic_mean(b, n)) for kind, (b, n) in row.items()}) for name, row in rows]


def base_to_new_table(records: list[dict[str, Any]], method_name: str, *, note: str | None = None) -> str:
    """Markdown table in the layout of CoCoOp's Table 1: Base, New and H of zero-shot CLIP and the method, per
    dataset (the average first); with a `note`, the method's row is marked † and the note follows the table."""
    first = records[0]
    lines = [
        f"Base-to-new generalisation ({model_text(first)}): {method_name} trained on the base classes "
        f"({shots_text(first['shots'])}, {seeds_text(first)}; mean over seeds), tested on the base classes and on "
        "the new classes separately. H = 2 Base New / (Base + New) of the seed means; the average row's H is that of "
        "the averaged Base and New. Accuracy in %." + (" " + evaluation_text(first.get("evaluation"))).rstrip(),
        "",
        "| Dataset | Method | Base | New | H |",
        "|---|---|---:|---:|---:|",
    ]
    marked = method_name + (" †" if note else "")
    for name, row in base_to_new_rows(records):
        for label, kind in ((zero_shot_label(first), "zeroshot"), (marked, "method")):
            cells = " | ".join(f"{value:.2f}" for value in row[kind])
            lines.append(f"| {name if kind == 'zeroshot' else ''} | {label} | {cells} |")
    return "\n".join([*lines, *(["", note] if note else [])]) + "\n"


def plot_base_to_new(records: list[dict[str, Any]], method_name: str, path: str | os.PathLike) -> None:
    """Grouped bars per dataset (the average first): Base, New and H of zero-shot CLIP (hatched) and the method."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = base_to_new_rows(records)
    colours = {"Base": "#4C72B0", "New": "#DD8452", "H": "#55A868"}
    width, gap = 0.12, 0.08
    figure = Figure(figsize=(max(6.5, 1.3 * len(rows) + 1.5), 4.8), layout="constrained")
    axes = figure.add_subplot()
    top = max(value for _, row in rows for values in row.values() for value in values)
    for group, (_, row) in enumerate(rows):
        for block, kind in enumerate(("zeroshot", "method")):
            for index, (metric, value) in enumerate(zip(colours, row[kind], strict=True)):
                x = group + (block * 3 + index - 2.5) * width + (block - 0.5) * gap
                style = {"color": colours[metric], "edgecolor": colours[metric]}
                if kind == "zeroshot":
                    style = {"facecolor": "white", "edgecolor": colours[metric], "hatch": "////"}
                axes.bar(x, value, width, linewidth=1.2, **style)
                if len(rows) <= 6:
                    axes.text(x, value + top * 0.01, f"{value:.1f}", ha="center", va="bottom", fontsize=7, rotation=90)
    axes.set_xticks(range(len(rows)), [name.replace(" over ", "\nover ") for name, _ in rows])
    axes.set_ylabel("Accuracy (%)")
    axes.set_ylim(0, top * 1.18 if top > 0 else 1)
    axes.set_xlim(-0.6, len(rows) - 0.4)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    first = records[0]
    figure.suptitle(
        f"Base-to-new generalisation: {method_name} vs {zero_shot_label(first).lower()}\n"
        f"{model_text(first)}, {shots_text(first['shots'])}, {seeds_text(first)}",
        fontsize=11,
    )
    handles = [Patch(facecolor=colour, label=metric) for metric, colour in colours.items()]
    handles += [
        Patch(facecolor="white", edgecolor="grey", hatch="////", label=zero_shot_label(first)),
        Patch(facecolor="grey", label=method_name),
    ]
    axes.legend(handles=handles, ncols=5, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8, frameon=False)
    with atomic_directory(Path(path).parent) as staging:
        figure.savefig(staging / Path(path).name, dpi=150)
