"""A few-shot study in one command: every dataset x method x shot count, each over --seeds, on one frozen CLIP.

    python examples/sweep.py --data_dir /data --output_dir sweep --seeds 1 2 3      # CoOp's study: 11 datasets
    python examples/sweep.py --dataset caltech101 oxford_flowers --data_dir /data --method zeroshot linear-probe \\
        coop --shots 1 2 4 8 16 --seeds 1 2 3 --output_dir sweep

Takes every flag of examples/train.py, with --dataset, --method and --shots as lists (methods: zeroshot,
linear-probe and every prompt method; zero-shot CLIP runs once per dataset). A prompt flag applies to the swept
methods that have the setting; a method listed as `<method>:<setting>=<value>[,...]` is a variant with its own
settings (CoOp's study: coop coop:class_token_position=middle coop:class_specific_context=true ...), in its own
folder. Where the paper reports a cell's accuracy with this backbone's OpenAI weights, the tables show it beside
the measured one. The CLIP is loaded once and each dataset's test features are encoded once.

Each cell is a run directory of its own, output_dir/<dataset>/<method>/shots<K> (zero-shot: shots0), as
examples/train.py writes it. Every cell's directory is checked before any work, so a rerun with other settings
stops at once (use a new --output_dir, or --overwrite_output_dir to start afresh). A rerun skips finished cells and
resumes an interrupted one from its finished seeds and last checkpoint. --shard I/N runs the I-th of N disjoint
parts of the grid (for N workers on one --output_dir); the same command without --shard then skips every finished
cell and writes the tables and plots. The output_dir gets results.csv (one row
per dataset, method, shots and seed), results.md (mean ± population std over seeds per method and shot count, per
dataset and averaged over datasets) and plots/ (accuracy against shots: <dataset>.png, average.png, all.png),
rewritten as cells finish (the plots at the end).
"""

from __future__ import annotations

from quick_help import answer_at_once

if __name__ == "__main__":
    answer_at_once(__file__)  # --help, misspelt flags, bad values: answered before torch loads

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from coop_hf.atomic import atomic_write_text
from coop_hf.cli import did_you_mean, run_command
from coop_hf.runners import METHOD_NAMES, PROMPT_METHODS, Experiment, LoadedBackbone, PromptArguments
from coop_hf.runners.arguments import FEW_SHOT_BENCHMARKS, SweepArguments, method_of, settings_by_method
from coop_hf.runners.baselines import linear_probe_run_config, run_linear_probe, run_zeroshot, zeroshot_run_config
from coop_hf.runners.experiment import claim_run_directories
from coop_hf.runners.help import parse_flags
from coop_hf.runners.prompt_learning import PromptRun, prompt_fields
from coop_hf.runners.published import ALL_BENCHMARKS, published_accuracy, runs_as_published
from coop_hf.runners.records import announce, check_dataset_folders, dataset_folder, write_results
from coop_hf.runners.reporting import (
    AVERAGE,
    ZEROSHOT,
    baseline_labels,
    evaluation_text,
    plot_sweep,
    results_markdown,
    rows_csv,
)
from coop_hf.runners.settings import RunSettings
from coop_hf.runners.shard import Shard
from coop_hf.training import CoOpTrainingArguments

HUB_NAME_LIMIT = 96
"""The longest repository name the Hub accepts."""
CSV_COLUMNS = ("dataset", "method", "shots", "seed", "accuracy", "macro_accuracy", "run_dir")


@dataclass
class Cell:
    """One run of the grid: a method at a shot count on a dataset, in its own directory (`args.output_dir`)."""

    experiment: Experiment
    method: str
    run: RunSettings  # its shot count, the sweep's seeds, loss and noise
    run_dir: str  # relative to the sweep's output_dir
    args: CoOpTrainingArguments
    planned: PromptRun | None  # a prompt method's resolved run; None for a baseline

    @property
    def shots(self) -> int:
        return self.run.shots

    @property
    def run_args(self) -> CoOpTrainingArguments:
        """The arguments it runs with: its directory was claimed before the grid started, so nothing is removed;
        it resumes unless --overwrite_output_dir retrains every seed."""
        resume = None if self.args.overwrite_output_dir else "true"
        return dataclasses.replace(self.args, overwrite_output_dir=False, resume_from_checkpoint=resume)

    @property
    def run_config(self) -> dict[str, Any]:
        """The run configuration its runner records in its directory."""
        if self.planned is not None:
            return self.planned.run_config
        if self.method == ZEROSHOT:
            return zeroshot_run_config(self.experiment)
        return linear_probe_run_config(self.experiment, self.run)

    @property
    def name(self) -> str:
        shots = "zero-shot" if self.method == ZEROSHOT else f"{self.shots} shot{'s' if self.shots != 1 else ''}"
        return f"{self.experiment.dataset} | {self.method} | {shots}"


def check_grid(sweep: SweepArguments) -> None:
    """Refuse an unknown or repeated method, a shot count below 1 and datasets that would share an output folder."""
    unknown = [method for method in sweep.method if method_of(method) not in METHOD_NAMES]
    if unknown:
        close = did_you_mean(unknown[0], METHOD_NAMES)
        raise ValueError(f"Unknown --method {' '.join(unknown)}: use any of {', '.join(METHOD_NAMES)}.{close}")
    repeated = sorted({method for method in sweep.method if sweep.method.count(method) > 1})
    if repeated:
        raise ValueError(f"--method lists {', '.join(repeated)} more than once: list each method once.")
    if any(shots < 1 for shots in sweep.shots):
        raise ValueError(
            f"--shots takes counts of at least 1 (zero-shot CLIP is --method zeroshot), got {sweep.shots}."
        )
    check_dataset_folders(sweep.dataset)


def plan_grid(
    sweep: SweepArguments,
    experiments: list[Experiment],
    training_args: CoOpTrainingArguments,
    settings: dict[str, dict[str, Any]],
) -> list[Cell]:
    """Every cell of the grid, dataset by dataset, with its output directory and, for a prompt method, its plan."""
    sweep_run = RunSettings.from_arguments(sweep)
    cells = []
    for experiment in experiments:
        for method in sweep.method:
            for shots in [0] if method == ZEROSHOT else sorted(set(sweep.shots)):
                run_dir = f"{dataset_folder(experiment.dataset)}/{method_folder(method)}/shots{shots}"
                args = dataclasses.replace(training_args, output_dir=str(Path(training_args.output_dir) / run_dir))
                if method_of(method) in PROMPT_METHODS and args.push_to_hub:  # one repository per cell (and seed)
                    repo = f"{method_folder(method)}-{dataset_folder(experiment.dataset)}-{shots}shots"
                    repo_id = "-".join(filter(None, [args.hub_model_id, repo]))
                    args = dataclasses.replace(args, hub_model_id=hub_repo_id(repo_id))
                cell = Cell(experiment, method, sweep_run.replace(shots=shots), run_dir, args, None)
                if method_of(method) in PROMPT_METHODS:
                    spec = PROMPT_METHODS[method_of(method)]
                    cell.planned = spec.plan(experiment, cell.run, cell.run_args, settings[method])
                cells.append(cell)
    return cells


def hub_repo_id(repo_id: str) -> str:
    """`repo_id` as the Hub takes it: characters it refuses in a name ("lp++", a variant's "=") become "-", and a
    name past 96 characters is cut, with a hash of the whole that keeps two cells apart."""
    namespace, _, name = repo_id.rpartition("/")
    clean = re.sub(r"[-.]{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", name)).strip("-.")  # no "--" nor ".."
    if len(clean) > HUB_NAME_LIMIT:
        clean = f"{clean[: HUB_NAME_LIMIT - 9].rstrip('-.')}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return f"{namespace}/{clean}" if namespace else clean


def method_folder(entry: str) -> str:
    """A method entry's folder: its name, or a variant's name and settings ("coop-class_token_position=middle")."""
    return entry.replace(":", "-").replace(",", "-")


def published_figures(
    sweep: SweepArguments,
    cells: list[Cell],
    settings: dict[str, dict[str, Any]],
    training_args: CoOpTrainingArguments,
) -> dict[tuple[str, str, int], float]:
    """The papers' figures of the grid's cells (`coop_hf.runners.published`), per (dataset, method entry, shots),
    and of the average when the grid holds exactly CoOp's 11 datasets and every one of its cells qualifies: under
    the papers' protocol, for zero-shot CLIP, and for a trained cell when it trains as published (no label noise,
    cross-entropy, no training flag that its recipe sets) with its method's published prompt settings (`settings`:
    the prompt settings given per method entry)."""
    if sweep.protocol != "papers":
        return {}
    trains_as_published = not sweep.noise().active and sweep.loss == "ce" and not set_training_flags(training_args)
    figures, average = {}, {}
    every_benchmark = sorted(sweep.dataset) == sorted(FEW_SHOT_BENCHMARKS)
    for cell in cells:
        method, name = PROMPT_METHODS.get(method_of(cell.method)), method_of(cell.method)
        qualifies = cell.method == ZEROSHOT or (
            trains_as_published
            and (method is None or runs_as_published(method, cell.experiment, settings[cell.method]))
        )
        fields = prompt_fields(cell.planned.prompt_config) if cell.planned is not None else {}
        figure = published_accuracy(sweep.model_name_or_path, cell.experiment.dataset, name, cell.shots, fields)
        if qualifies and figure is not None:
            figures[cell.experiment.dataset, cell.method, cell.shots] = figure.accuracy
        if every_benchmark:
            mean = published_accuracy(sweep.model_name_or_path, ALL_BENCHMARKS, name, cell.shots, fields)
            key = (AVERAGE, cell.method, cell.shots)
            average[key] = average.get(key, True) and qualifies and mean is not None and mean.accuracy
    return figures | {key: value for key, value in average.items() if value}


def set_training_flags(training_args: CoOpTrainingArguments) -> list[str]:
    """The training arguments that some method's recipe sets and that differ from their defaults here (flags given:
    the runs no longer train as published)."""
    recipe_fields = {
        key for spec in PROMPT_METHODS.values() for recipe in spec.recipes.values() for key in recipe.training
    }
    defaults = CoOpTrainingArguments(output_dir=training_args.output_dir)
    return [key for key in sorted(recipe_fields) if getattr(training_args, key) != getattr(defaults, key)]


def finished_results(cell: Cell, seeds: list[int]) -> dict[str, Any] | None:
    """The results of a cell a previous sweep finished with these seeds (its configuration was checked), else None."""
    path = Path(cell.args.output_dir) / "results.json"
    if cell.args.overwrite_output_dir or not path.is_file():
        return None
    results = json.loads(path.read_text())
    return results if results.get("seeds") == seeds else None


def run_cell(cell: Cell) -> dict[str, Any]:
    """Run a cell with its runner (reusing the finished seeds of an interrupted run) and write its results.json."""
    args = cell.run_args
    if cell.planned is not None:
        results = cell.planned.execute()
    elif cell.method == ZEROSHOT:
        results = run_zeroshot(cell.experiment, cell.run, args)
    else:
        results = run_linear_probe(cell.experiment, cell.run, args)
    if args.should_save:
        write_results(results, args.output_dir)
    return results


def cell_rows(cell: Cell, results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per seed of a cell's results (the rows of results.csv)."""
    head = {"dataset": cell.experiment.dataset, "method": cell.method, "shots": cell.shots, "run_dir": cell.run_dir}
    return [{**head, **run} for run in results["per_seed"]]


def write_tables(
    rows: list[dict[str, Any]],
    sweep: SweepArguments,
    output_dir: Path,
    labels: dict[str, str],
    published: dict[tuple[str, str, int], float],
) -> None:
    """Write output_dir/results.csv and results.md (atomically) from the rows so far, with the papers' figures (the
    average's once the rows hold every dataset)."""
    if {row["dataset"] for row in rows} != set(sweep.dataset):
        published = {key: value for key, value in published.items() if key[0] != AVERAGE}
    intro = (
        f"# Few-shot study: {sweep.model_name_or_path}\n\n"
        f"Test accuracy (%), mean ± population std over seeds {', '.join(map(str, sweep.seeds))} (as CoOp's "
        "parse_test_res.py, at full precision); shots: labelled training images per class. Rows per seed: "
        "results.csv; figures: plots/."
    )
    if published:
        intro += (
            ' "(paper x)": the accuracy the paper reports for the cell, with OpenAI\'s weights of this backbone '
            "(coop_hf.runners.published)."
        )
    if sweep.protocol == "realistic":
        intro += " " + evaluation_text({"imbalance_ratio": sweep.imbalance_ratio, "mean_shots": sweep.mean_shots})
    atomic_write_text(output_dir / "results.csv", rows_csv(rows, CSV_COLUMNS))
    atomic_write_text(
        output_dir / "results.md", results_markdown(rows, intro=intro, labels=labels, published=published)
    )


ARGUMENTS = (SweepArguments, PromptArguments, CoOpTrainingArguments)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the grid; returns the rows of results.csv."""
    sweep, prompt, training_args = parse_flags(ARGUMENTS, argv)
    check_grid(sweep)
    shard = Shard.parse(sweep.shard, overwrite=training_args.overwrite_output_dir)
    settings = settings_by_method(prompt, sweep.method)
    backbone = LoadedBackbone.load(sweep.model_name_or_path, cache_dir=sweep.feature_cache_dir)
    experiments = [
        Experiment(backbone, dataset, sweep.data_dir, batch_size=training_args.per_device_eval_batch_size)
        for dataset in sweep.dataset
    ]
    grid = plan_grid(sweep, experiments, training_args, settings)
    cells = shard.select(grid) if shard else grid
    labels = baseline_labels(backbone.backbone.family)  # "Zero-shot SigLIP" on a SigLIP backbone
    published = published_figures(sweep, grid, settings, training_args)
    # Every cell's directory is checked before the first run starts, so a mismatch never stops a sweep half-way,
    # and claimed once the test images are read, so an unreadable one leaves nothing written.
    claim_run_directories(
        [cell.experiment for cell in cells], [(cell.args.output_dir, cell.run_config) for cell in cells],
        overwrite=training_args.overwrite_output_dir, main_process_first=training_args.main_process_first,
    )  # fmt: skip
    output_dir = Path(training_args.output_dir)
    log = training_args.should_log
    rows: list[dict[str, Any]] = []
    progress = tqdm(cells, desc="sweep", unit="cell", disable=not log, dynamic_ncols=True)
    for cell in progress:
        progress.set_description(cell.name)
        results = finished_results(cell, sweep.seeds)
        done_before = results is not None
        if results is None:
            results = run_cell(cell)
        rows.extend(cell_rows(cell, results))
        if log:
            spread = f" ± {results['accuracy_std']:.2f}" if cell.method != ZEROSHOT and len(sweep.seeds) > 1 else ""
            note = " (finished earlier)" if done_before else ""
            progress.write(f"[coop-hf] {cell.name}: {results['accuracy']:.2f}{spread} % test accuracy{note}")
        if training_args.should_save and shard is None:
            write_tables(rows, sweep, output_dir, labels, published)
    progress.close()
    if shard is not None:
        announce(training_args, shard.finished_message(len(cells), len(grid), "cells", resume_flag=False))
    elif training_args.should_save:
        plot_sweep(rows, output_dir / "plots", labels=labels)
        if log:
            print(f"[coop-hf] {len(cells)} runs: tables in {output_dir / 'results.md'}, rows in results.csv, plots/")
    return rows


if __name__ == "__main__":
    run_command(main)
