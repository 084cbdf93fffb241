"""Unsupervised prompt learning (UPL): train CoOp prompts on CLIP's own most confident zero-shot pseudo-labels,
then average the seeds' prompts, and compare with zero-shot CLIP. No training label is used.

    accelerate launch examples/train_upl.py --dataset caltech101 --data_dir /data --seeds 1 2 3 4
    python examples/train_upl.py --dataset caltech101 --data_dir /data --pseudo_top_k 16 --loss gce

Takes the flags of examples/train.py (model, dataset, prompt, loss, every TrainingArguments flag) plus
--pseudo_top_k (default: --shots), --pseudo_label_templates dataset|ensemble and --pseudo_label_models (UPL*: the
mean zero-shot probabilities of several CLIP backbones label the images; classes left with fewer images than asked
are listed). Writes output_dir/results.json
(`accuracy` of the seed ensemble, `accuracy_zeroshot`, `pseudo_label_accuracy` against the held-out true labels,
one entry per seed), output_dir/results.md, output_dir/seed<N>/ (each prompt) and output_dir/ensemble/ (the
ensemble with its model card; pushed with --push_to_hub --hub_model_id).
"""

from __future__ import annotations

from quick_help import answer_at_once

if __name__ == "__main__":
    answer_at_once(__file__)  # --help, misspelt flags, bad values: answered before torch loads

import json
from pathlib import Path

from coop_hf.atomic import atomic_write_text
from coop_hf.cli import run_command
from coop_hf.runners import ExperimentArguments, PromptArguments, UPLArguments, load_experiment, prompt_settings
from coop_hf.runners.help import parse_flags
from coop_hf.runners.records import write_results
from coop_hf.runners.reporting import zero_shot_label
from coop_hf.runners.settings import RunSettings
from coop_hf.runners.upl import run_upl
from coop_hf.training import CoOpTrainingArguments


def results_table(results: dict) -> str:
    rows = [
        (zero_shot_label(results), f"{results['accuracy_zeroshot']:.2f}"),
        (
            f"UPL, mean of the {len(results['seeds'])} prompts",
            f"{results['accuracy_members_mean']:.2f} ± {results['accuracy_std']:.2f}",
        ),
        (f"UPL, ensemble of the {len(results['seeds'])} prompts", f"{results['accuracy']:.2f}"),
    ]
    lines = [
        f"UPL on {results['dataset']}: {results['pseudo_labels']} pseudo-labelled images "
        f"(top {results['shots']} per class), pseudo-label accuracy {results['pseudo_label_accuracy']:.2f} %.",
        "",
        "| Method | Test accuracy (%) |",
        "|---|---|",
        *(f"| {method} | {accuracy} |" for method, accuracy in rows),
    ]
    return "\n".join(lines) + "\n"


ARGUMENTS = (ExperimentArguments, PromptArguments, UPLArguments, CoOpTrainingArguments)


def main(argv: list[str] | None = None) -> dict:
    experiment, prompt, upl, training_args = parse_flags(ARGUMENTS, argv)
    settings = prompt_settings(prompt, "coop")
    run = RunSettings.from_arguments(experiment).replace(shots=upl.pseudo_top_k or experiment.shots)
    results = run_upl(
        load_experiment(experiment, training_args),
        run,
        training_args,
        settings,
        pseudo_label_templates=upl.pseudo_label_templates,
        pseudo_label_models=upl.pseudo_label_models,
    )
    if training_args.should_save:
        write_results(results, training_args.output_dir)
        atomic_write_text(Path(training_args.output_dir) / "results.md", results_table(results))
    if training_args.should_log:
        print(results_table(results))
        print(json.dumps({key: value for key, value in results.items() if key != "per_seed"}, indent=2))
    return results


if __name__ == "__main__":
    run_command(main)
