"""Base-to-new generalisation (the CoCoOp protocol): train on the base half of each dataset's classes, test on the
base classes and on the new classes, report Base, New and their harmonic mean H.

    python examples/base_to_new.py --dataset caltech101 oxford_flowers --data_dir /data --seeds 1 2 3
    python examples/base_to_new.py --method cocoop --dataset caltech101 --data_dir /data --output_dir b2n

Per dataset and seed, the all-class few-shot draw (train K, val min(K, 4), default K = 16) is subsampled to the
base classes (the first half of the sorted labels, relabelled), a prompt is trained on them, tested on the base
classes' test images, then moved to the new class names and tested on the new classes' test images. Takes
train.py's flags (every TrainingArguments flag too; --resume_from_checkpoint continues an interrupted run). Without
a context flag, CoOp's context starts from "a photo of a" as in the reference's base-to-new config. Writes
output_dir/<dataset>/ (results.json, the base-class prompts seed<N>/), output_dir/results.md (the table, with
zero-shot CLIP) and output_dir/base_to_new.png.
"""

from __future__ import annotations

from quick_help import answer_at_once

if __name__ == "__main__":
    answer_at_once(__file__)  # --help, misspelt flags, bad values: answered before torch loads

from pathlib import Path

from coop_hf.cli import run_command
from coop_hf.runners import PromptArguments
from coop_hf.runners.base_to_new import BaseToNewArguments, base_to_new_study
from coop_hf.runners.help import parse_flags
from coop_hf.training import CoOpTrainingArguments

ARGUMENTS = (BaseToNewArguments, PromptArguments, CoOpTrainingArguments)


def main(argv: list[str] | None = None) -> list[dict]:
    arguments, prompt, training_args = parse_flags(ARGUMENTS, argv)
    records = base_to_new_study(arguments, prompt, training_args)
    if training_args.should_log and arguments.shard is None:
        print((Path(training_args.output_dir) / "results.md").read_text())
    return records


if __name__ == "__main__":
    run_command(main)
