"""Domain generalisation and cross-dataset transfer (the CoOp / CoCoOp protocols): train a prompt on a source
dataset, test it on the source and on every target dataset over the target's own class names.

    python examples/transfer.py --source imagenet --targets imagenet_v2 imagenet_sketch imagenet_a imagenet_r \\
        --data_dir /data --seeds 1 2 3
    python examples/transfer.py --source imagenet --targets caltech101 oxford_pets stanford_cars oxford_flowers \\
        food101 fgvc_aircraft sun397 dtd eurosat ucf101 --data_dir /data --seeds 1 2 3

Takes train.py's flags (default 16 shots; every TrainingArguments flag too; --resume_from_checkpoint continues an
interrupted run, and a run with other --targets reuses the trained prompts). Writes output_dir/seed<N>/ (the
prompts), output_dir/results.json and output_dir/results.md: the papers' table (source, targets, and for
cross-dataset transfer the average over the targets), zero-shot CLIP beside the method.
"""

from __future__ import annotations

from quick_help import answer_at_once

if __name__ == "__main__":
    answer_at_once(__file__)  # --help, misspelt flags, bad values: answered before torch loads

from pathlib import Path

from coop_hf.cli import run_command
from coop_hf.runners import PromptArguments
from coop_hf.runners.help import parse_flags
from coop_hf.runners.transfer import TransferArguments, transfer_study
from coop_hf.training import CoOpTrainingArguments

ARGUMENTS = (TransferArguments, PromptArguments, CoOpTrainingArguments)


def main(argv: list[str] | None = None) -> dict:
    arguments, prompt, training_args = parse_flags(ARGUMENTS, argv)
    record = transfer_study(arguments, prompt, training_args)
    if training_args.should_log and arguments.shard is None:
        print((Path(training_args.output_dir) / "results.md").read_text())
    return record


if __name__ == "__main__":
    run_command(main)
