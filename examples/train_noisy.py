"""Prompt learning under noisy labels (the PTNL study): the chosen models and losses on the same few-shot splits
with 0 / 12.5 / 25 / 50 % of each class's shots corrupted, in one command.

    accelerate launch examples/train_noisy.py --dataset caltech101 --data_dir /data --shots 16 --seeds 1 2 3
    python examples/train_noisy.py --dataset caltech101 dtd eurosat --data_dir /data --output_dir noisy
    python examples/train_noisy.py --dataset dtd --data_dir /data --study_methods coop:ce coop:gce linear-probe \\
        --n_ctx_values 4 8 16 --noise_rates 0 0.5

Takes the flags of examples/train.py plus --noise_rates, --study_noise_type (replace: n of the K shots replaced by
images of other classes, the PTNL scheme; symmetric; confusion), --study_methods (`<method>[:ce|gce]`: the linear
probe or any prompt method with cross-entropy or generalised cross-entropy) and --n_ctx_values (the context-length
ablation); --gradient_flow records, for every prompt model trained on noisy labels, the mean per-sample gradient
norm of the clean and of the noisy samples at each step (PTNL's robustness analysis). PTNL's protocol is the
default: 50 epochs at every shot count (unless --num_train_epochs / --max_steps is given), a clean validation split
(--noise_val true corrupts it too) and the last epoch's prompt.

Each (model, rate) run writes its own output_dir/<model>-noise<rate>/results.json; output_dir/results.json holds
them all, output_dir/results.md the table (mean ± std over seeds, test accuracy in %), and output_dir/plots/ the
accuracy against the noise rate, the injected noise of the noisiest split as a confusion matrix, each prompt
model's test predictions at that rate and, with --gradient_flow, the gradient flow at that rate (also a table in
results.md; each seed's steps in <run>/seed<N>/gradient_flow.json). With several datasets (--dataset caltech101 dtd
...: PTNL's study in one command), each dataset's study is all that in output_dir/<dataset>/, and output_dir/ holds
the average over the datasets: results.md (each dataset's table, then the average's), results.json and
plots/accuracy_vs_noise.png. Every run directory is checked before any
training: a rerun with other settings stops (use a new --output_dir or --overwrite_output_dir);
--resume_from_checkpoint true continues.
"""

from __future__ import annotations

from quick_help import answer_at_once

if __name__ == "__main__":
    answer_at_once(__file__)  # --help, misspelt flags, bad values: answered before torch loads

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoModel

from coop_hf.atomic import atomic_write_text
from coop_hf.cli import run_command
from coop_hf.data import column_values
from coop_hf.gradient_flow import GRADIENT_FLOW_FILE
from coop_hf.noise import CLEAN_LABEL, NoiseSpec
from coop_hf.runners import NoiseStudyArguments, PromptArguments
from coop_hf.runners.arguments import SeveralDatasetsArguments, settings_by_method
from coop_hf.runners.baselines import linear_probe_run_config, run_linear_probe
from coop_hf.runners.experiment import Experiment, claim_run_directories
from coop_hf.runners.help import parse_flags
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.runners.prompt_learning import PromptRun
from coop_hf.runners.records import announce, check_dataset_folders, dataset_folder, shots_text, write_results
from coop_hf.runners.reporting import method_labels, plot_confusion, plot_gradient_flow, plot_noise_curves
from coop_hf.runners.run import load_experiments
from coop_hf.runners.settings import RunSettings
from coop_hf.runners.shard import Shard
from coop_hf.training import CoOpTrainingArguments

LOSSES = {"ce": "CE", "gce": "GCE"}


@dataclass(frozen=True)
class StudyModel:
    """One model of the study: a method (linear-probe or a prompt method), its loss and prompt settings."""

    method: str
    loss: str | None
    settings: dict[str, Any]
    ablated_n_ctx: int | None = None
    family: str | None = None  # the backbone's, once loaded: "Linear probe SigLIP"

    @property
    def label(self) -> str:
        name = method_labels([self.method], self.family)[self.method]
        details = [LOSSES[self.loss]] if self.loss else []
        details += [f"M={self.ablated_n_ctx}"] if self.ablated_n_ctx else []
        return f"{name} ({', '.join(details)})" if details else name

    @property
    def trains_by_steps(self) -> bool:
        """A prompt method trained by gradient steps (not the linear probe, not a method fitted on features)."""
        return self.method in PROMPT_METHODS and not PROMPT_METHODS[self.method].fitted

    @property
    def slug(self) -> str:
        parts = [self.method, *([self.loss] if self.loss else [])]
        return "-".join(parts + ([f"nctx{self.ablated_n_ctx}"] if self.ablated_n_ctx else []))


def study_models(study: NoiseStudyArguments, prompt: PromptArguments) -> list[StudyModel]:
    """The models --study_methods and --n_ctx_values ask for (an unknown method or loss is an error)."""
    entries = [(entry, *entry.partition(":")[::2]) for entry in study.study_methods]
    for entry, method, loss in entries:
        if method == "linear-probe" and loss:
            raise ValueError(f"--study_methods {entry}: the linear probe has no loss choice; write linear-probe.")
        if method != "linear-probe" and (method not in PROMPT_METHODS or (loss or "ce") not in LOSSES):
            raise ValueError(
                f"--study_methods {entry}: use <method>[:ce|gce] with a method of {', '.join(PROMPT_METHODS)}, or "
                "linear-probe."
            )
    settings_of = settings_by_method(prompt, [method for _, method, _ in entries])
    models = []
    for entry, method, loss in entries:
        if method == "linear-probe":
            models.append(StudyModel(method, None, {}))
            continue
        learner = PROMPT_METHODS[method]
        has_n_ctx = "n_ctx" in learner.model_class.config_class.prompt_settings()
        loss = loss or "ce"
        if learner.fitted and not learner.trainer_class.uses_loss:  # Tip-Adapter, LP++: no loss in the label
            if loss != "ce":
                raise ValueError(
                    f"--study_methods {entry}: {learner.display_name} is fitted by its own procedure, with no loss to "
                    f"choose; write {method}."
                )
            loss = None
        for n_ctx in (study.n_ctx_values or [None]) if has_n_ctx else [None]:
            ablated = {"n_ctx": n_ctx} if n_ctx else {}
            models.append(StudyModel(method, loss, settings_of[method] | ablated, n_ctx))
    return models


@dataclass
class StudyRun:
    """One model at one noise rate, planned before any run starts: its settings, its directory and, for a prompt
    model, its resolved plan."""

    model: StudyModel
    run: RunSettings
    args: CoOpTrainingArguments
    planned: PromptRun | None  # None: the linear probe

    def run_config(self, runner: Experiment) -> dict:
        return self.planned.run_config if self.planned else linear_probe_run_config(runner, self.run)

    def execute(self, runner: Experiment) -> dict:
        return self.planned.execute() if self.planned else run_linear_probe(runner, self.run, self.args)


def plan_study(
    runner: Experiment, models: list[StudyModel], study: NoiseStudyArguments, experiment, training_args
) -> list[StudyRun]:
    """Every model at every noise rate, in its own directory under output_dir."""
    plan = []
    output_dir = Path(training_args.output_dir)
    for rate in study.noise_rates:
        noise = NoiseSpec(study.study_noise_type, rate, val=experiment.noise_val)
        for model in models:
            args = dataclasses.replace(
                training_args,
                output_dir=str(output_dir / f"{model.slug}-noise{rate:g}"),
                gradient_flow=training_args.gradient_flow and noise.rate > 0 and model.trains_by_steps,
                overwrite_output_dir=False,  # claimed before the runs start; never remove what was resumed
            )
            run = RunSettings.from_arguments(experiment).replace(noise=noise, loss=model.loss or "ce")
            planned = None
            if model.method in PROMPT_METHODS:
                planned = PROMPT_METHODS[model.method].plan(runner, run, args, model.settings)
            plan.append(StudyRun(model, run, args, planned))
    return plan


def results_table(runs: list[dict], rates: list[float]) -> str:
    header = "| Model | " + " | ".join(f"{100 * rate:g} % noise" for rate in rates) + " |"
    lines = [header, "|---" * (len(rates) + 1) + "|"]
    for label in dict.fromkeys(run["study_method"] for run in runs):
        cells = [
            f"{run['accuracy']:.2f} ± {run['accuracy_std']:.2f}" for rate in rates for run in runs
            if run["study_method"] == label and run["noise_rate_requested"] == rate
        ]  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_confusions(runner: Experiment, runs: list[dict], experiment, noise: NoiseSpec, plots: Path) -> None:
    """The injected noise of the noisiest split (first seed) and each prompt model's test predictions on it."""
    seed = experiment.seeds[0]
    train = runner.few_shot(experiment.shots, seed, noise=noise, allow_fewer=experiment.allow_fewer_shots)[0]["train"]
    classnames = runner.classnames
    rate = f"{100 * noise.rate:g} % {noise.noise_type} noise"
    plot_confusion(
        column_values(train, CLEAN_LABEL), column_values(train, "label"), classnames, plots / "noise_confusion.png",
        title=f"Injected label noise ({rate}, seed {seed})", xlabel="label given", ylabel="class of the image",
    )  # fmt: skip
    for result in runs:
        if result["noise_rate_requested"] != noise.rate or result["method"] == "linear-probe":
            continue
        # AutoModel knows every method's model_type: PROMPT_METHODS imported every method folder
        model = AutoModel.from_pretrained(result["per_seed"][0]["prompt_dir"], clip_model=runner.backbone.clip)
        logits, labels = runner.predict(model)
        plot_confusion(
            labels.tolist(), logits.argmax(-1).tolist(), classnames,
            plots / f"predictions_{Path(result['run_dir']).name}.png",
            title=f"{result['study_method']} trained at {rate}: test predictions (seed {seed})",
            xlabel="predicted class", ylabel="true class",
        )  # fmt: skip


def gradient_flow_report(runs: list[dict], noise: NoiseSpec, plots: Path, title: str) -> str:
    """Plot the gradient flow of each prompt model trained at the noisiest rate (`plots/gradient_flow.png`) and
    return its markdown table: the clean and noisy samples' mean per-sample gradient norm over training, mean over
    seeds, and their ratio."""
    traced = [
        run for run in runs if run["noise_rate_requested"] == noise.rate and "gradient_flow" in run["per_seed"][0]
    ]
    if not traced:
        return ""
    flows = {
        run["study_method"]: [
            json.loads((Path(seed["prompt_dir"]) / GRADIENT_FLOW_FILE).read_text())["steps"]
            for seed in run["per_seed"]
        ]
        for run in traced
    }
    plot_gradient_flow(flows, plots / "gradient_flow.png", title=title)
    lines = [
        f"\nGradient flow at {100 * noise.rate:g} % noise: mean per-sample gradient norm over training\n",
        "| Model | clean samples | noisy samples | noisy / clean |",
        "|---|---|---|---|",
    ]
    for run in traced:
        summaries = [seed["gradient_flow"] for seed in run["per_seed"]]
        # A split can hold no noisy (or no clean) sample, e.g. 2 shots at 12.5 %: round(0.25) = 0 noisy shots.
        clean, noisy = (
            [summary[name] for summary in summaries if summary[name] is not None] for name in ("clean", "noisy")
        )
        cells = [f"{np.mean(values):.4g}" if values else "–" for values in (clean, noisy)]
        ratio = f"{np.mean(noisy) / np.mean(clean):.2f}" if clean and noisy else "–"
        lines.append(f"| {run['study_method']} | {cells[0]} | {cells[1]} | {ratio} |")
    return "\n".join(lines) + "\n"


def average_runs(studies: list[list[dict]]) -> list[dict]:
    """Each (model, rate) of the datasets' studies (planned alike) averaged over the datasets: per seed, the mean
    of the datasets' accuracies; then the mean ± population std over seeds of those means, as each dataset's
    table gives its seeds'."""
    averaged = []
    for cells in zip(*studies, strict=True):
        per_seed = np.mean([[seed["accuracy"] for seed in cell["per_seed"]] for cell in cells], axis=0)
        first = cells[0]
        averaged.append({
            "study_method": first["study_method"],
            "noise_rate_requested": first["noise_rate_requested"],
            "accuracy": float(per_seed.mean()),
            "accuracy_std": float(per_seed.std()),
            "per_seed": [{"seed": seed["seed"], "accuracy": float(value)}
                         for seed, value in zip(first["per_seed"], per_seed, strict=True)],
        })  # fmt: skip
    return averaged


def write_study(
    runner: Experiment, runs: list[dict], models: list[StudyModel], experiment, study, args: CoOpTrainingArguments
) -> tuple[dict, str]:
    """One dataset's results.json, results.md (the table, and the gradient flow's) and plots under
    `args.output_dir`; returns the summary record and the table."""
    output_dir = Path(args.output_dir)
    summary = {
        "study": "label-noise",
        "dataset": runner.dataset,
        "shots": experiment.shots,
        "seeds": experiment.seeds,
        "noise_type": study.study_noise_type,
        "noise_rates": study.noise_rates,
        "noise_val": experiment.noise_val,
        "study_methods": [model.label for model in models],
        "runs": runs,
    }
    table = results_table(runs, study.noise_rates)
    if args.should_save:
        write_results(summary, output_dir)
        atomic_write_text(output_dir / "results.md", table)  # before the plots: a failing plot never loses it
        noisiest = NoiseSpec(study.study_noise_type, max(study.noise_rates), val=experiment.noise_val)
        title = f"{runner.dataset}, {shots_text(experiment.shots)}: {study.study_noise_type} noise"
        plot_noise_curves(runs, output_dir / "plots" / "accuracy_vs_noise.png", title=title)
        if noisiest.rate > 0:
            plot_confusions(runner, runs, experiment, noisiest, output_dir / "plots")
            flow_title = f"{title} at {100 * noisiest.rate:g} %: gradient flow"
            flow_table = gradient_flow_report(runs, noisiest, output_dir / "plots", flow_title)
            if flow_table:
                table += flow_table
                atomic_write_text(output_dir / "results.md", table)
    return summary, table


def write_average(summaries: list[dict], experiment, study, args: CoOpTrainingArguments) -> dict:
    """With several datasets: output_dir/results.json (every dataset's summary and the average), results.md (each
    dataset's table, then the average's) and plots/accuracy_vs_noise.png (the average)."""
    output_dir = Path(args.output_dir)
    average = average_runs([summary["runs"] for summary in summaries])
    record = {"study": "label-noise", "datasets": summaries, "average": average}
    sections = [
        f"## {summary['dataset']}\n\n{results_table(summary['runs'], study.noise_rates)}" for summary in summaries
    ]
    average_title = f"Average over {len(summaries)} datasets"
    average_section = f"## {average_title}\n\n{results_table(average, study.noise_rates)}"
    text = "\n".join([*sections, average_section])
    if args.should_save:
        write_results(record, output_dir)
        atomic_write_text(output_dir / "results.md", text)
        title = f"{average_title}, {shots_text(experiment.shots)}: {study.study_noise_type} noise"
        plot_noise_curves(average, output_dir / "plots" / "accuracy_vs_noise.png", title=title)
    if args.should_log:
        print(f"\n{average_section}")
    return record


ARGUMENTS = (SeveralDatasetsArguments, PromptArguments, NoiseStudyArguments, CoOpTrainingArguments)


def main(argv: list[str] | None = None) -> dict:
    experiment, prompt, study, training_args = parse_flags(ARGUMENTS, argv)
    if experiment.noise().active:
        raise ValueError(
            "--noise_type and --noise_rate set one run's noise; the study sweeps --study_noise_type over "
            "--noise_rates: drop --noise_type / --noise_rate."
        )
    check_dataset_folders(experiment.dataset)
    models = study_models(study, prompt)
    runners = load_experiments(experiment, experiment.dataset, training_args)
    models = [dataclasses.replace(model, family=runners[0].backbone.backbone.family) for model in models]
    output_dir = Path(training_args.output_dir)
    several = len(runners) > 1
    studies = [
        (runner, dataclasses.replace(training_args, output_dir=str(output_dir / dataset_folder(runner.dataset))))
        if several else (runner, training_args)
        for runner in runners
    ]  # fmt: skip
    shard = Shard.parse(study.shard, overwrite=training_args.overwrite_output_dir)
    whole = [
        (runner, cell) for runner, args in studies for cell in plan_study(runner, models, study, experiment, args)
    ]
    plan = shard.select(whole) if shard else whole
    # Every run directory is checked before the first run starts, so a mismatch never stops a study half-way, and
    # claimed once the test images are read, so an unreadable one leaves nothing written.
    claim_run_directories(
        [runner for runner, _ in plan], [(cell.args.output_dir, cell.run_config(runner)) for runner, cell in plan],
        overwrite=training_args.overwrite_output_dir, main_process_first=training_args.main_process_first,
    )  # fmt: skip
    runs = {}
    for index, (runner, cell) in enumerate(plan, start=1):
        noise = cell.run.noise
        where = f"{runner.dataset}, " if several else ""
        step = f"noise study {index}/{len(plan)}: {where}{cell.model.label}, {100 * noise.rate:g} % {noise.noise_type}"
        announce(cell.args, step)
        results = cell.execute(runner) | {"study_method": cell.model.label, "run_dir": cell.args.output_dir}
        if training_args.should_save:
            write_results(results, cell.args.output_dir)
        runs.setdefault(runner.dataset, []).append(results)
    if shard is not None:
        announce(training_args, shard.finished_message(len(plan), len(whole), "runs"))
        return {}
    summaries = []
    for runner, args in studies:
        summary, table = write_study(runner, runs[runner.dataset], models, experiment, study, args)
        summaries.append(summary)
        if training_args.should_log:
            print(f"## {runner.dataset}\n\n{table}" if several else table)
    return write_average(summaries, experiment, study, training_args) if several else summaries[0]


if __name__ == "__main__":
    run_command(main)
