"""Prompt learning under noisy labels: CoOp with cross-entropy and with generalised cross-entropy, and the linear
probe, on the same few-shot splits with 0 / 12.5 / 25 / 50 % of each class's shots corrupted.

    accelerate launch examples/train_noisy.py --dataset caltech101 --data_dir /data --shots 16 --seeds 1 2 3
    python examples/train_noisy.py --dataset dtd --data_dir /data --study_noise_type symmetric --noise_rates 0 0.5

Takes the flags of examples/train.py plus --noise_rates and --study_noise_type (replace: n of the K shots replaced
by images of other classes, the PTNL scheme; symmetric; confusion). PTNL's protocol is the default: 50 epochs at
every shot count (unless --num_train_epochs / --max_steps is given), a clean validation split (--noise_val true
corrupts it too) and the last epoch's prompt. Each (method, rate) run writes its own
output_dir/<method>-noise<rate>/results.json; output_dir/results.json holds them all and output_dir/results.md the
table (mean ± std over seeds, test accuracy in %). Every run directory is checked before any training: a rerun with
other settings stops (use a new --output_dir or --overwrite_output_dir); --resume_from_checkpoint true continues.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from transformers import HfArgumentParser

from coop_hf.atomic import atomic_write_text
from coop_hf.noise import NoiseSpec
from coop_hf.run_directory import claim_run_directory
from coop_hf.runners import ExperimentArguments, NoiseStudyArguments, PromptArguments, load_experiment, prompt_settings
from coop_hf.runners.baselines import linear_probe_config, run_linear_probe
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.runners.records import announce, write_results
from coop_hf.training import CoOpTrainingArguments

COOP = PROMPT_METHODS["coop"]

METHODS = {"CoOp (CE)": "ce", "CoOp (GCE)": "gce", "Linear probe": None}


def results_table(runs: list[dict], rates: list[float]) -> str:
    header = "| Method | " + " | ".join(f"{100 * rate:g} % noise" for rate in rates) + " |"
    lines = [header, "|---" * (len(rates) + 1) + "|"]
    for name in METHODS:
        cells = [
            f"{run['accuracy']:.2f} ± {run['accuracy_std']:.2f}" for rate in rates for run in runs
            if run["study_method"] == name and run["noise_rate_requested"] == rate
        ]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ExperimentArguments, PromptArguments, NoiseStudyArguments, CoOpTrainingArguments))
    experiment, prompt, study, training_args = parser.parse_args_into_dataclasses(args=argv)
    settings = prompt_settings(prompt, "coop")
    runner = load_experiment(experiment, training_args)
    plan = []
    for rate in study.noise_rates:
        noise = NoiseSpec(study.study_noise_type, rate, val=experiment.noise_val)
        for name, loss in METHODS.items():
            slug = f"{'linear-probe' if loss is None else f'coop-{loss}'}-noise{rate:g}"
            args = dataclasses.replace(training_args, output_dir=str(Path(training_args.output_dir) / slug))
            plan.append((name, loss, noise, args))
    # Every run directory is checked before the first run starts, so a mismatch never stops a study half-way.
    for _, loss, noise, args in plan:
        if loss is None:
            config = linear_probe_config(runner, experiment.shots, noise=noise)
        else:
            config = COOP.run_config(
                runner, experiment.shots, args, settings, loss=loss, gce_q=experiment.gce_q, noise=noise
            )
        with args.main_process_first(desc="output directory"):
            claim_run_directory(args.output_dir, config, overwrite=args.overwrite_output_dir)
    runs = []
    for index, (name, loss, noise, args) in enumerate(plan, start=1):
        announce(args, f"noise study {index}/{len(plan)}: {name}, {100 * noise.rate:g} % {noise.noise_type} noise")
        args = dataclasses.replace(args, overwrite_output_dir=False)  # claimed above; never remove what was resumed
        if loss is None:
            results = run_linear_probe(runner, experiment.shots, experiment.seeds, args, noise=noise)
        else:
            results = COOP.run(
                runner, experiment.shots, experiment.seeds, args, settings, loss=loss, gce_q=experiment.gce_q,
                noise=noise,
            )  # fmt: skip
        results["study_method"] = name
        if training_args.should_save:
            write_results(results, args.output_dir)
        runs.append(results)
    summary = {
        "study": "label-noise",
        "dataset": experiment.dataset,
        "shots": experiment.shots,
        "seeds": experiment.seeds,
        "noise_type": study.study_noise_type,
        "noise_rates": study.noise_rates,
        "noise_val": experiment.noise_val,
        "runs": runs,
    }
    table = results_table(runs, study.noise_rates)
    if training_args.should_save:
        write_results(summary, training_args.output_dir)
        atomic_write_text(Path(training_args.output_dir) / "results.md", table)
    if training_args.should_log:
        print(table)
        print(
            json.dumps([{key: run[key] for key in ("study_method", "noise_rate_actual", "accuracy")} for run in runs])
        )
    return summary


if __name__ == "__main__":
    main()
