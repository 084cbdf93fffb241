"""The transfer protocols of CoOp and CoCoOp: a saved prompt evaluated on any dataset over that dataset's own class
names, base-to-new generalisation (CoCoOp), and domain generalisation / cross-dataset transfer (a prompt trained on
a source dataset, evaluated on target datasets).

A unified context moves to another class list with `set_classnames` (only the class-name tokens change, as the
reference rebuilds them from the target's class names); a class-specific context cannot, as in the reference.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import AutoConfig

from ..atomic import atomic_directory, atomic_write_text
from ..data.subsample import subsample_classes, subsample_labels
from ..hub import CardResults
from ..hub_access import model_load_kwargs
from ..methods import PROMPT_MODELS
from ..modeling_utils import PromptPreTrainedModel
from ..noise import NO_NOISE, NoiseReport, NoiseSpec
from ..run_directory import claim_run_directory, splits_fingerprint
from ..training import CoOpTrainingArguments
from .arguments import ExperimentArguments, prompt_settings
from .experiment import Experiment, LoadedBackbone
from .methods import PROMPT_METHODS
from .prompt_learning import PromptLearning
from .records import accuracy_percent, announce, write_results
from .reporting import DATASET_TITLES

DG_TARGETS = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")
"""The ImageNet variants of CoOp's domain-generalisation table (ImageNet is the source)."""

BASE_TO_NEW_CTX_INIT = "a photo of a"
"""The reference's base-to-new CoOp config (`vit_b16_ctxv1`) initialises the context from this phrase (n_ctx 4)."""

TRAINING_RESULT_KEYS = (
    "accuracy", "accuracy_std", "macro_accuracy", "zeroshot_accuracy", "num_classes", "per_seed",
    "noise_type", "noise_rate_requested", "noise_rate_actual",
)  # fmt: skip
"""Fields of a training run's record that a transfer record replaces with its own (the settings are kept)."""


def display_name(dataset: str) -> str:
    """The paper's name of a CoOp benchmark; other datasets keep their name (a local path: its folder name)."""
    return DATASET_TITLES.get(dataset, os.path.basename(os.path.normpath(dataset)) or dataset)


def dataset_folder(dataset: str) -> str:
    """A folder name for a dataset's outputs: the benchmark name, or a Hub id / local path made file-safe."""
    if os.path.exists(os.path.expanduser(dataset)):
        dataset = os.path.basename(os.path.normpath(os.path.expanduser(dataset)))
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", dataset).strip("_.") or "dataset"


def harmonic_mean(base: float, new: float) -> float:
    """H = 2 B N / (B + N), CoCoOp's summary of base and new accuracy (0 when both are 0)."""
    return 2 * base * new / (base + new) if base + new else 0.0


def seed_mean(per_seed: list[dict[str, Any]], key: str) -> tuple[float, float]:
    """Mean and population standard deviation (ddof 0, as the reference's parser) of `key` over seeds."""
    values = np.array([run[key] for run in per_seed], dtype=float)
    return float(values.mean()), float(values.std())


# -- evaluating a prompt on a dataset ------------------------------------------------------------------------------


def move_to_classnames(model: PromptPreTrainedModel, classnames: list[str]) -> bool:
    """Give the model the dataset's class list (a unified context moves; the class-name tokens are rebuilt).
    Returns whether the class list changed; a prompt that cannot move raises a `ValueError`."""
    if list(model.config.classnames) == list(classnames):
        return False
    model.set_classnames(list(classnames))  # raises for a model that cannot move
    return True


@torch.no_grad()
def evaluate_prompt(model: PromptPreTrainedModel, experiment: Experiment) -> dict[str, float]:
    """Accuracy and macro accuracy (%) of the prompt on the experiment's test split (cached features, or pixels for
    a method that changes the image tower: `Experiment.predict`), over the experiment's class names (the prompt
    moves to them first, see `move_to_classnames`)."""
    move_to_classnames(model, experiment.classnames)
    return accuracy_percent(experiment.predict(model).argmax(-1), experiment.test["labels"])


def load_seed_prompt(
    method: PromptLearning, experiment: Experiment, prompt_dir: str | os.PathLike
) -> PromptPreTrainedModel:
    """A prompt saved by `train_seeds`, on the experiment's (already loaded) CLIP."""
    backbone = experiment.backbone
    return method.model_class.from_pretrained(prompt_dir, clip_model=backbone.clip, tokenizer=backbone.tokenizer)


@dataclass
class EvaluationArguments:
    """A saved prompt evaluated on a dataset's test split (`examples/evaluate_prompt.py`)."""

    prompt: str = field(metadata={"help": "The saved prompt: a folder written by save_pretrained, or a Hub id."})
    dataset: str = field(
        metadata={
            "help": "A CoOp benchmark name with --data_dir, or a Hub id / local image-classification dataset. Its "
            "test split is evaluated over its own class names."
        }
    )
    output_dir: str = field(metadata={"help": "Where results.json is written."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base CLIP: Hub id or local path (default: the one the prompt names)."}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder holding the per-dataset folders in the CoOp layout."}
    )
    feature_cache_dir: str | None = field(
        default=None, metadata={"help": "Where image features are cached (default: the datasets cache)."}
    )
    batch_size: int = field(default=100, metadata={"help": "Images per batch when encoding the test split."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Write into an --output_dir that holds another run (removes that run's results)."},
    )


def run_evaluation(args: EvaluationArguments) -> dict[str, Any]:
    """Evaluate the prompt `args.prompt` on the test split of `args.dataset` and write `output_dir/results.json`:
    accuracy and macro accuracy, zero-shot CLIP's accuracy on the same split, and the identity of the prompt and of
    the dataset."""
    load_kwargs = model_load_kwargs(args.prompt, flag="--prompt")
    config = AutoConfig.from_pretrained(args.prompt, **load_kwargs)
    if config.model_type not in PROMPT_MODELS:
        raise ValueError(
            f"--prompt {args.prompt!r} holds a model of type {config.model_type!r}, not a prompt model "
            f"({', '.join(PROMPT_MODELS)})."
        )
    base = args.model_name_or_path or config.base_model_name_or_path
    if not base:
        raise ValueError(f"--prompt {args.prompt!r} does not name its base CLIP: pass --model_name_or_path.")
    experiment = Experiment.load(
        base, args.dataset, args.data_dir, feature_cache_dir=args.feature_cache_dir, batch_size=args.batch_size
    )
    backbone = experiment.backbone
    model = PROMPT_MODELS[config.model_type].from_pretrained(
        args.prompt, config=config, clip_model=backbone.clip, tokenizer=backbone.tokenizer, **load_kwargs
    )
    trained_classes = len(model.config.classnames)
    moved = move_to_classnames(model, experiment.classnames)  # a prompt that cannot move fails before any work
    prompt = {
        "name_or_path": args.prompt,
        "model_type": config.model_type,
        "method": model.method_name,
        "num_classes": trained_classes,
        "base_model_name_or_path": config.base_model_name_or_path,
    }
    claim_run_directory(
        args.output_dir, experiment.run_config("evaluate", prompt=prompt), overwrite=args.overwrite_output_dir
    )
    scores = evaluate_prompt(model, experiment)
    results = {
        **scores,
        "zeroshot_accuracy": experiment.zeroshot["accuracy"],
        "prompt": prompt,
        "classnames_moved": moved,
        "model_name_or_path": base,
        "dataset": {
            "name": args.dataset,
            "data_dir": args.data_dir,
            "num_classes": len(experiment.classnames),
            "num_test_images": len(experiment.test["labels"]),
            "splits_fingerprint": experiment.splits_fingerprint,
        },
    }
    write_results(results, args.output_dir)
    return results


# -- base-to-new generalisation (CoCoOp) ---------------------------------------------------------------------------


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
        self.labels = subsample_labels(train["label"], subsample)
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
        self, shots: int, seed: int, *, noise: NoiseSpec = NO_NOISE, allow_fewer: bool = False
    ) -> tuple[datasets.DatasetDict, NoiseReport | None]:
        if noise.active:
            raise ValueError("Label noise is not part of the base-to-new protocol: drop --noise_type / --noise_rate.")
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
    shots: int,
    seeds: list[int],
    args: CoOpTrainingArguments,
    settings: dict[str, Any],
    *,
    loss: str = "ce",
    gce_q: float | None = None,
    allow_fewer: bool = False,
    callbacks: list | None = None,
) -> dict[str, Any]:
    """CoCoOp's protocol on one dataset: per seed, train a prompt on the base classes (`args.output_dir/seed<N>`,
    resumable as `train.py`), test it on the base classes' test images over the base class names, then move it to
    the new class names and test it on the new classes' test images. The record holds base and new accuracy and
    their harmonic mean per seed and over seeds (H of the seed means, as the paper reports it), and zero-shot
    CLIP's on the same splits."""
    base, new = ClassSubset(experiment, "base"), ClassSubset(experiment, "new")
    trained = method.run(
        base, shots, seeds, args, settings, loss=loss, gce_q=gce_q, allow_fewer=allow_fewer, callbacks=callbacks
    )
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
class BaseToNewArguments(ExperimentArguments):
    """The base-to-new protocol of `examples/base_to_new.py`: `examples/train.py`'s experiment flags, with several
    datasets."""

    dataset: list[str] = field(
        default_factory=lambda: [ExperimentArguments.dataset],
        metadata={
            "aliases": ["--datasets"],
            "help": "One or more datasets, each a CoOp benchmark name (with --data_dir) or a Hub id / local "
            "image-classification dataset; each gets its own folder output_dir/<dataset>.",
        },
    )


def prompt_method(name: str) -> PromptLearning:
    """The prompt-learning method a transfer protocol trains (`--method`)."""
    if name not in PROMPT_METHODS:
        raise ValueError(
            f"--method {name!r} learns no prompt to transfer: use one of {', '.join(PROMPT_METHODS)} (zero-shot "
            "CLIP is reported beside it)."
        )
    return PROMPT_METHODS[name]


def load_experiments(
    arguments: ExperimentArguments, names: list[str], args: CoOpTrainingArguments
) -> list[Experiment]:
    """One experiment per dataset on one backbone (the split files read, so a missing dataset fails at once)."""
    backbone = LoadedBackbone.load(arguments.model_name_or_path, cache_dir=arguments.feature_cache_dir)
    batch_size = args.per_device_eval_batch_size
    return [Experiment(backbone, name, arguments.data_dir, batch_size=batch_size) for name in names]


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
    if arguments.noise().active:
        raise ValueError("Label noise is not part of the base-to-new protocol: drop --noise_type / --noise_rate.")
    settings = _base_to_new_settings(method, prompt_settings(prompt, arguments.method))
    records = []
    for experiment in load_experiments(arguments, arguments.dataset, training_args):
        output_dir = Path(training_args.output_dir) / dataset_folder(experiment.dataset)
        args = dataclasses.replace(training_args, output_dir=str(output_dir))
        record = run_base_to_new(
            experiment, method, arguments.shots, arguments.seeds, args, settings, loss=arguments.loss,
            gce_q=arguments.gce_q, allow_fewer=arguments.allow_fewer_shots, callbacks=callbacks,
        )  # fmt: skip
        if args.should_save:
            write_results(record, output_dir)
        records.append(record)
    if training_args.should_save:
        output_dir = Path(training_args.output_dir)
        atomic_write_text(output_dir / "results.md", base_to_new_table(records, method.model_class.method_name))
        plot_base_to_new(records, method.model_class.method_name, output_dir / "base_to_new.png")
    return records


def base_to_new_rows(records: list[dict[str, Any]]) -> list[tuple[str, dict[str, tuple[float, float, float]]]]:
    """(dataset, {"zeroshot": (B, N, H), "method": (B, N, H)}) per dataset, the average first when there are
    several: its B and N are the means over datasets and its H the harmonic mean of those (CoCoOp's Table 1)."""
    rows = [
        (
            display_name(record["dataset"]),
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


def _model_text(record: dict[str, Any]) -> str:
    return os.path.basename(os.path.normpath(record["model_name_or_path"]))


def _seeds_text(record: dict[str, Any]) -> str:
    seeds = record["seeds"]
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def base_to_new_table(records: list[dict[str, Any]], method_name: str) -> str:
    """Markdown table in the layout of CoCoOp's Table 1: Base, New and H of zero-shot CLIP and the method, per
    dataset (the average first)."""
    first = records[0]
    lines = [
        f"Base-to-new generalisation ({_model_text(first)}): {method_name} trained on the base classes "
        f"({first['shots']} shots, {_seeds_text(first)}; mean over seeds), tested on the base classes and on the new "
        "classes separately. H = 2 Base New / (Base + New) of the seed means; the average row's H is that of the "
        "averaged Base and New. Accuracy in %.",
        "",
        "| Dataset | Method | Base | New | H |",
        "|---|---|---:|---:|---:|",
    ]
    for name, row in base_to_new_rows(records):
        for label, kind in (("Zero-shot CLIP", "zeroshot"), (method_name, "method")):
            cells = " | ".join(f"{value:.2f}" for value in row[kind])
            lines.append(f"| {name if kind == 'zeroshot' else ''} | {label} | {cells} |")
    return "\n".join(lines) + "\n"


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
        f"Base-to-new generalisation: {method_name} vs zero-shot CLIP\n"
        f"{_model_text(first)}, {first['shots']} shots, {_seeds_text(first)}",
        fontsize=11,
    )
    handles = [Patch(facecolor=colour, label=metric) for metric, colour in colours.items()]
    handles += [
        Patch(facecolor="white", edgecolor="grey", hatch="////", label="Zero-shot CLIP"),
        Patch(facecolor="grey", label=method_name),
    ]
    axes.legend(handles=handles, ncols=5, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8, frameon=False)
    with atomic_directory(Path(path).parent) as staging:
        figure.savefig(staging / Path(path).name, dpi=150)


# -- domain generalisation and cross-dataset transfer ---------------------------------------------------------------


@dataclass
class TransferArguments(ExperimentArguments):
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


def run_transfer(
    source: Experiment,
    targets: list[Experiment],
    method: PromptLearning,
    shots: int,
    seeds: list[int],
    args: CoOpTrainingArguments,
    settings: dict[str, Any],
    *,
    loss: str = "ce",
    gce_q: float | None = None,
    noise: NoiseSpec = NO_NOISE,
    allow_fewer: bool = False,
    callbacks: list | None = None,
) -> dict[str, Any]:
    """Train one prompt per seed on the source's few-shot splits (`args.output_dir/seed<N>`, resumable as
    `train.py`), test it on the source's test split, then on every target's test split over the target's own class
    names. The record holds per dataset the mean (and per seed) accuracy and zero-shot CLIP's."""
    if method.prompt_fields(source, settings).get("class_specific_context"):
        other = [target.dataset for target in targets if target.classnames != source.classnames]
        if other:
            raise ValueError(
                f"--class_specific_context true learns one context per {source.dataset} class, which cannot move to "
                f"the class lists of {', '.join(other)}: train a unified context (--class_specific_context false), "
                "or keep to --targets with the source's class list."
            )
    trained = method.run(
        source, shots, seeds, args, settings, loss=loss, gce_q=gce_q, noise=noise, allow_fewer=allow_fewer,
        callbacks=callbacks,
    )  # fmt: skip
    with args.main_process_first(desc="trained prompts"):  # the main process saved them
        prompts = [(seed, load_seed_prompt(method, source, Path(args.output_dir) / f"seed{seed}")) for seed in seeds]
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


def transfer_table(record: dict[str, Any], method_name: str) -> str:
    """Markdown table in the layout of the CoOp / CoCoOp papers: the source, then every target (and, for
    cross-dataset transfer, the average over the targets, the source excluded); zero-shot CLIP and the method."""
    source, targets = record["source"], record["targets"]
    cross_dataset = record["protocol"] == "cross-dataset"
    header = [f"Source: {display_name(source['dataset'])}"]
    header += [f"Target: {display_name(target['dataset'])}" for target in targets]
    header += ["Average (targets)"] if cross_dataset else []
    rows = []
    for label, learnable, key in (("Zero-shot CLIP", "", "zeroshot_accuracy"), (method_name, "✓", "accuracy")):
        values = [source[key], *(target[key] for target in targets)]
        values += [record["average"][key]] if cross_dataset else []
        rows.append(f"| {label} | {learnable} | " + " | ".join(f"{value:.2f}" for value in values) + " |")
    caption = (
        f"{record['protocol'].capitalize()} ({_model_text(record)}): {method_name} trained on "
        f"{display_name(source['dataset'])} ({record['shots']} shots, {_seeds_text(record)}; mean over seeds), tested "
        "on each target's test split over the target's own class names. Accuracy in %."
    )
    lines = [
        caption,
        "",
        "| Method | Learnable? | " + " | ".join(header) + " |",
        "|---|:---:|" + "---:|" * len(header),
    ]
    return "\n".join([*lines, *rows]) + "\n"


def transfer_study(
    arguments: TransferArguments, prompt: Any, training_args: CoOpTrainingArguments, callbacks: list | None = None
) -> dict[str, Any]:
    """`run_transfer` from `arguments.dataset` (the source) to `arguments.targets`; writes
    `output_dir/results.json` and the table `output_dir/results.md`."""
    method = prompt_method(arguments.method)
    settings = prompt_settings(prompt, arguments.method)
    source, *targets = load_experiments(arguments, [arguments.dataset, *arguments.targets], training_args)
    record = run_transfer(
        source, targets, method, arguments.shots, arguments.seeds, training_args, settings, loss=arguments.loss,
        gce_q=arguments.gce_q, noise=arguments.noise(), allow_fewer=arguments.allow_fewer_shots, callbacks=callbacks,
    )  # fmt: skip
    if training_args.should_save:
        write_results(record, training_args.output_dir)
        table = transfer_table(record, method.model_class.method_name)
        atomic_write_text(Path(training_args.output_dir) / "results.md", table)
    return record
