"""Few-shot CoOp (or a baseline) on a CoOp benchmark or any image-classification dataset.

    accelerate launch examples/train.py                       # CoOp 16-shot Flowers102 (Hub copy), ViT-B/32
    accelerate launch examples/train.py --dataset oxford_flowers --data_dir /data --shots 4 --seeds 1 2 3
    python examples/train.py --method zeroshot --dataset caltech101 --data_dir /data
    python examples/train.py --method linear-probe --dataset caltech101 --data_dir /data --shots 16

Every `TrainingArguments` flag works too (--output_dir, --num_train_epochs, --max_steps, --bf16, --push_to_hub,
--hub_model_id, --resume_from_checkpoint, ...). Writes output_dir/results.json and, for CoOp, one prompt folder
per seed (output_dir/seed<N>: prompt, model card, Trainer logs and checkpoints).
"""

from __future__ import annotations

from quick_help import answer_at_once

if __name__ == "__main__":
    answer_at_once(__file__)  # --help, misspelt flags, bad values: answered before torch loads


from coop_hf.cli import run_command
from coop_hf.runners import ExperimentArguments, PromptArguments, run_method
from coop_hf.runners.help import parse_flags
from coop_hf.training import CoOpTrainingArguments

ARGUMENTS = (ExperimentArguments, PromptArguments, CoOpTrainingArguments)


def main(argv: list[str] | None = None) -> dict:
    experiment, prompt, training_args = parse_flags(ARGUMENTS, argv)
    return run_method(experiment, prompt, training_args)  # ends with a mean ± std line; the record in results.json


if __name__ == "__main__":
    run_command(main)
