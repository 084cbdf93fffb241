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

import json
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from coop_hf.experiments import METHODS, run_experiment
from coop_hf.training import CoOpTrainingArguments


@dataclass
class ExperimentArguments:
    model_name_or_path: str = field(
        default="openai/clip-vit-base-patch32", metadata={"help": "Base CLIP: Hub id or local path."}
    )
    dataset: str = field(
        default="dpdl-benchmark/oxford_flowers102",
        metadata={
            "help": "A CoOp benchmark name (oxford_flowers, caltech101, oxford_pets, stanford_cars, fgvc_aircraft, "
            "food101, sun397, dtd, eurosat, ucf101, imagenet, imagenet_v2, imagenet_sketch, imagenet_a, imagenet_r) "
            "with --data_dir, or a Hub id / local image-classification dataset."
        },
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder holding the per-dataset folders in the CoOp layout."}
    )
    shots: int = field(default=16, metadata={"help": "Training images per class (K)."})
    seeds: list[int] = field(default_factory=lambda: [1], metadata={"help": "Seeds, e.g. --seeds 1 2 3."})
    method: str = field(default="coop", metadata={"help": f"One of {', '.join(METHODS)}."})
    n_ctx: int = field(default=16, metadata={"help": "Context vectors M (ignored with --ctx_init)."})
    ctx_init: str | None = field(
        default=None, metadata={"help": "Initialisation phrase, e.g. 'a photo of a'."}
    )
    class_token_position: str = field(default="end", metadata={"help": "end | middle | front."})
    class_specific_context: bool = field(default=False, metadata={"help": "One context per class (CSC)."})
    allow_fewer_shots: bool = field(
        default=False, metadata={"help": "Take all images of a class that has fewer than --shots."}
    )
    feature_cache_dir: str | None = field(
        default=None, metadata={"help": "Where to cache image features (default: the datasets cache)."}
    )


def main() -> None:
    parser = HfArgumentParser((ExperimentArguments, CoOpTrainingArguments))
    experiment, training_args = parser.parse_args_into_dataclasses()
    results = run_experiment(
        method=experiment.method,
        model_name_or_path=experiment.model_name_or_path,
        dataset=experiment.dataset,
        data_dir=experiment.data_dir,
        shots=experiment.shots,
        seeds=experiment.seeds,
        args=training_args,
        model_kwargs=dict(
            n_ctx=experiment.n_ctx,
            ctx_init=experiment.ctx_init,
            class_token_position=experiment.class_token_position,
            class_specific_context=experiment.class_specific_context,
        ),
        allow_fewer=experiment.allow_fewer_shots,
        feature_cache_dir=experiment.feature_cache_dir,
    )
    if training_args.should_log:
        summary = {key: value for key, value in results.items() if key != "per_seed"}
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
