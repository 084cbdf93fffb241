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

from coop_hf.experiments import METHODS, Backbone, Experiment, NoiseSpec, write_results
from coop_hf.losses import DEFAULT_GCE_Q
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
    ctx_init: str | None = field(default=None, metadata={"help": "Initialisation phrase, e.g. 'a photo of a'."})
    class_token_position: str = field(default="end", metadata={"help": "end | middle | front."})
    class_specific_context: bool = field(default=False, metadata={"help": "One context per class (CSC)."})
    allow_fewer_shots: bool = field(
        default=False, metadata={"help": "Take all images of a class that has fewer than --shots."}
    )
    loss: str = field(default="ce", metadata={"help": "ce (cross-entropy) or gce (generalised cross-entropy)."})
    gce_q: float = field(default=DEFAULT_GCE_Q, metadata={"help": "q of the generalised cross-entropy, in (0, 1]."})
    noise_type: str = field(default="none", metadata={"help": "Label noise: none | symmetric | replace | confusion."})
    noise_rate: float = field(default=0.0, metadata={"help": "Fraction of noisy shots per class, in [0, 1)."})


def run(experiment: ExperimentArguments, training_args: CoOpTrainingArguments, callbacks=None) -> dict:
    """Run the requested method for every seed and write `output_dir/results.json`."""
    if experiment.method not in METHODS:
        raise ValueError(f"Unknown --method {experiment.method!r}: use one of {', '.join(METHODS)}.")
    runner = Experiment(
        Backbone.load(experiment.model_name_or_path),
        experiment.dataset,
        experiment.data_dir,
        batch_size=training_args.per_device_eval_batch_size,
    )
    noise = NoiseSpec(experiment.noise_type, experiment.noise_rate)
    if experiment.method == "zeroshot":
        results = runner.run_zeroshot(experiment.seeds)
    elif experiment.method == "linear-probe":
        results = runner.run_linear_probe(
            experiment.shots, experiment.seeds, noise=noise, allow_fewer=experiment.allow_fewer_shots
        )
    else:
        results = runner.run_coop(
            experiment.shots,
            experiment.seeds,
            training_args,
            dict(
                n_ctx=experiment.n_ctx,
                ctx_init=experiment.ctx_init,
                class_token_position=experiment.class_token_position,
                class_specific_context=experiment.class_specific_context,
            ),
            loss=experiment.loss,
            gce_q=experiment.gce_q,
            noise=noise,
            allow_fewer=experiment.allow_fewer_shots,
            callbacks=callbacks,
        )
    if training_args.should_save:
        write_results(results, training_args.output_dir)
    return results


def main() -> None:
    parser = HfArgumentParser((ExperimentArguments, CoOpTrainingArguments))
    experiment, training_args = parser.parse_args_into_dataclasses()
    results = run(experiment, training_args)
    if training_args.should_log:
        print(json.dumps({key: value for key, value in results.items() if key != "per_seed"}, indent=2))


if __name__ == "__main__":
    main()
