"""A saved prompt evaluated on any dataset, over that dataset's own class names (`examples/evaluate_prompt.py`), and
the evaluation every transfer protocol shares.

A unified context moves to another class list with `set_classnames` (only the class-name tokens change, as the
reference rebuilds them from the target's class names); a class-specific context cannot, as in the reference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig

from ..hub_access import NOT_A_PROMPT, model_load_kwargs
from ..methods import PROMPT_MODELS
from ..modeling_utils import PromptPreTrainedModel
from .experiment import Experiment, claim_run_directories
from .prompt_learning import PromptLearning
from .records import accuracy_percent, write_results


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
    logits, labels = experiment.predict(model)
    return accuracy_percent(logits.argmax(-1), labels)


def load_prompt_config(name_or_path: str, *, flag: str = "--prompt") -> tuple[PretrainedConfig, dict[str, bool]]:
    """The config of the saved prompt `name_or_path` (a folder or Hub id) and the `from_pretrained` keyword
    arguments to load it with (`model_load_kwargs`); a value that holds no prompt model raises a one-line error
    naming `flag`."""
    load_kwargs = model_load_kwargs(name_or_path, flag=flag, not_found=NOT_A_PROMPT)
    try:
        config = AutoConfig.from_pretrained(name_or_path, **load_kwargs)
    except (OSError, ValueError) as error:  # no config.json or no model type in it; a Hub id of no repository
        reason = str(error).splitlines()[0]
        raise ValueError(f"{flag} {name_or_path!r} holds no saved prompt ({reason})") from None
    if config.model_type not in PROMPT_MODELS:
        raise ValueError(
            f"{flag} {name_or_path!r} holds a model of type {config.model_type!r}, not a prompt model "
            f"({', '.join(PROMPT_MODELS)})."
        )
    return config, load_kwargs


def load_seed_prompt(
    method: PromptLearning, experiment: Experiment, prompt_dir: str | os.PathLike
) -> PromptPreTrainedModel:
    """A prompt saved by `train_seeds`, on the experiment's (already loaded) backbone."""
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
    config, load_kwargs = load_prompt_config(args.prompt)
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
    run = (args.output_dir, experiment.run_config("evaluate", prompt=prompt))
    claim_run_directories([experiment], [run], overwrite=args.overwrite_output_dir)  # test images read first
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
