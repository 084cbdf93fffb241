"""The few-shot protocol end to end: data, one run per seed of CoOp or a baseline, and the results record."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .atomic import atomic_write_text
from .baselines import fit_linear_probe, zero_shot_logits, zero_shot_weights
from .data import (
    build_few_shot_splits,
    check_images,
    ensemble_templates,
    load_dataset_splits,
    with_coop_transform,
)
from .hub import CardResults
from .metrics import ClassificationAccuracy
from .modeling_coop import CoOpModel
from .training import CoOpTrainer, CoOpTrainingArguments, compute_accuracy_metrics, reference_epochs

METHODS = ("coop", "zeroshot", "linear-probe")


@dataclass
class Backbone:
    """The frozen CLIP shared by every run of an experiment, with its tokenizer and image processor."""

    name_or_path: str
    clip: CLIPModel
    tokenizer: Any
    image_processor: Any

    @classmethod
    def load(cls, name_or_path: str) -> Backbone:
        clip = CLIPModel.from_pretrained(name_or_path).eval()
        clip.requires_grad_(False)
        return cls(
            name_or_path=name_or_path,
            clip=clip,
            tokenizer=AutoTokenizer.from_pretrained(name_or_path),
            image_processor=AutoImageProcessor.from_pretrained(name_or_path),
        )

    @torch.no_grad()
    def features(self, dataset: datasets.Dataset, *, batch_size: int, cache_dir: str | None) -> datasets.Dataset:
        """Test-transform CLIP image features of a split, with columns image_embeds and labels."""
        loader = torch.utils.data.DataLoader(
            with_coop_transform(dataset, self.image_processor, train=False), batch_size=batch_size
        )
        embeds, labels = [], []
        for batch in tqdm(loader, desc="Encoding images", disable=len(loader) < 2):
            embeds.append(self.clip.get_image_features(pixel_values=batch["pixel_values"]).pooler_output)
            labels.append(batch["labels"])
        return datasets.Dataset.from_dict(
            {"image_embeds": torch.cat(embeds).numpy(), "labels": torch.cat(labels).numpy()}
        ).with_format("torch")


@dataclass
class Task:
    """A dataset under the few-shot protocol: its full splits, class names and hand-made template."""

    dataset: str
    splits: datasets.DatasetDict
    classnames: list[str]
    template: str

    @classmethod
    def load(cls, dataset: str, data_dir: str | None) -> Task:
        splits, classnames, template = load_dataset_splits(dataset, data_dir)
        return cls(dataset=dataset, splits=splits, classnames=classnames, template=template)

    def few_shot(self, shots: int, seed: int, *, allow_fewer: bool = False) -> datasets.DatasetDict:
        """The seed's K-shot train and min(K, 4)-shot val splits (images checked now, not mid-training)."""
        splits = build_few_shot_splits(self.splits, shots, seed, allow_fewer=allow_fewer)
        check_images(splits["train"])
        check_images(splits["val"])
        return splits


def accuracy_percent(
    logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
) -> dict[str, float]:
    predictions = np.asarray(logits).argmax(-1) if np.asarray(logits).ndim == 2 else np.asarray(logits)
    scores = ClassificationAccuracy().compute(predictions=predictions, references=np.asarray(labels))
    return {name: 100.0 * value for name, value in scores.items()}


def zero_shot_accuracy(
    backbone: Backbone, task: Task, test: datasets.Dataset, templates: list[str]
) -> dict[str, float]:
    weights = zero_shot_weights(backbone.clip, backbone.tokenizer, task.classnames, templates)
    columns = test[:]
    return accuracy_percent(zero_shot_logits(backbone.clip, weights, columns["image_embeds"]), columns["labels"])


def run_coop_seed(
    backbone: Backbone,
    task: Task,
    splits: datasets.DatasetDict,
    test: datasets.Dataset,
    args: CoOpTrainingArguments,
    *,
    seed: int,
    shots: int,
    model_kwargs: dict[str, Any],
    zeroshot_accuracy: float,
    compute_loss_func=None,
    resume_from_checkpoint: str | bool | None = None,
    push_to: str | None = None,
    callbacks: list | None = None,
) -> dict[str, Any]:
    """Train one seed's prompt with the CoOp recipe, evaluate it on the test features, save it with its card
    (and push it to the Hub repository `push_to`)."""
    set_seed(seed)
    model = CoOpModel.from_clip(backbone.clip, task.classnames, tokenizer=backbone.tokenizer, **model_kwargs)
    model.config.base_model_name_or_path = backbone.name_or_path
    train = with_coop_transform(splits["train"], backbone.image_processor, train=True)
    args.seed = seed
    trainer = CoOpTrainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=backbone.image_processor,
        compute_metrics=compute_accuracy_metrics,
        compute_loss_func=compute_loss_func,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    metrics = trainer.evaluate(eval_dataset=test, metric_key_prefix="test")
    result = {
        "seed": seed,
        "accuracy": metrics["test_accuracy"],
        "macro_accuracy": metrics["test_macro_accuracy"],
        "prompt_dir": args.output_dir,
    }
    model.card_results = CardResults(
        dataset_name=task.dataset,
        dataset_id=task.dataset,
        accuracy=result["accuracy"],
        rows=[
            ("Zero-shot CLIP", f"{zeroshot_accuracy:.2f}"),
            (f"CoOp (this prompt, seed {seed})", f"{result['accuracy']:.2f}"),
        ],
        description=f"{shots}-shot training, seed {seed}, evaluated on the full test split ({len(test)} images).",
        hyperparameters={
            "shots": shots,
            "seed": seed,
            "epochs": args.num_train_epochs,
            "optimizer": f"SGD lr {args.learning_rate}, momentum {args.momentum}, weight decay {args.weight_decay}",
            "schedule": f"{args.warmup_epochs} warm-up epoch(s) at {args.warmup_lr}, then cosine",
            "batch size": args.per_device_train_batch_size * max(args.world_size, 1),
        },
    )
    trainer.save_model()
    trainer.save_state()
    if push_to is not None and args.should_save:
        result["hub_url"] = model.push_to_hub(push_to, token=args.hub_token, private=args.hub_private_repo)
    return result


def run_linear_probe_seed(
    backbone: Backbone,
    splits: datasets.DatasetDict,
    test: datasets.Dataset,
    *,
    seed: int,
    batch_size: int,
    cache_dir: str | None,
) -> dict[str, Any]:
    train = backbone.features(splits["train"], batch_size=batch_size, cache_dir=cache_dir)[:]
    val = backbone.features(splits["val"], batch_size=batch_size, cache_dir=cache_dir)[:]
    probe = fit_linear_probe(
        train["image_embeds"].numpy(), train["labels"].numpy(), val["image_embeds"].numpy(), val["labels"].numpy()
    )
    test_columns = test[:]
    scores = accuracy_percent(probe.predict(test_columns["image_embeds"].numpy()), test_columns["labels"])
    return {"seed": seed, **scores, "C": probe.C}


def summarise(
    method: str, task: Task, shots: int, seeds: list[int], per_seed: list[dict[str, Any]], **extra
) -> dict[str, Any]:
    """The results record: mean and (population) std over seeds of the accuracy, in percent, plus each seed."""
    accuracies = np.array([run["accuracy"] for run in per_seed])
    return {
        "method": method,
        "dataset": task.dataset,
        "num_classes": len(task.classnames),
        "shots": shots,
        "seeds": seeds,
        "accuracy": float(accuracies.mean()),
        "accuracy_std": float(accuracies.std()),
        "macro_accuracy": float(np.mean([run["macro_accuracy"] for run in per_seed])),
        **extra,
        "per_seed": per_seed,
    }


def write_results(results: dict[str, Any], output_dir: str | os.PathLike) -> Path:
    path = Path(output_dir) / "results.json"
    atomic_write_text(path, json.dumps(results, indent=2) + "\n")
    return path


def run_experiment(
    *,
    method: str,
    model_name_or_path: str,
    dataset: str,
    data_dir: str | None,
    shots: int,
    seeds: list[int],
    args: CoOpTrainingArguments,
    model_kwargs: dict[str, Any],
    allow_fewer: bool = False,
    feature_cache_dir: str | None = None,
    compute_loss_func=None,
) -> dict[str, Any]:
    """Run `method` ("coop", "zeroshot" or "linear-probe") for every seed and write `output_dir/results.json`.

    Test-split image features are computed once (and cached), before any training, so an unreadable test
    image stops the run at once. CoOp seeds train in `output_dir/seed<N>`, which ends up holding the prompt,
    its model card and the Trainer logs; with `args.resume_from_checkpoint` set, a killed run continues from
    each seed's last checkpoint and finished seeds are not trained again. With `args.push_to_hub`, each seed's
    prompt goes to `args.hub_model_id` (suffixed "-seed<N>" when there are several seeds).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}: use one of {', '.join(METHODS)}.")
    backbone = Backbone.load(model_name_or_path)
    task = Task.load(dataset, data_dir)
    batch_size = args.per_device_eval_batch_size
    with args.main_process_first(desc="test-split image features"):
        test = backbone.features(task.splits["test"], batch_size=batch_size, cache_dir=feature_cache_dir)
    zeroshot = zero_shot_accuracy(backbone, task, test, [task.template])
    extra: dict[str, Any] = {
        "model_name_or_path": model_name_or_path,
        "zeroshot_accuracy": zeroshot["accuracy"],
    }

    per_seed = []
    if method == "zeroshot":
        ensemble = zero_shot_accuracy(backbone, task, test, ensemble_templates(dataset))
        extra.update(
            template=task.template,
            accuracy_ensemble=ensemble["accuracy"],
            templates_ensemble=ensemble_templates(dataset),
        )
        per_seed = [{"seed": seed, **zeroshot} for seed in seeds]
    for seed in seeds if method != "zeroshot" else []:
        splits = task.few_shot(shots, seed, allow_fewer=allow_fewer)
        if method == "linear-probe":
            per_seed.append(
                run_linear_probe_seed(
                    backbone, splits, test, seed=seed, batch_size=batch_size, cache_dir=feature_cache_dir
                )
            )
            continue
        seed_dir = Path(args.output_dir) / f"seed{seed}"
        finished = seed_dir / "seed_result.json"
        if args.resume_from_checkpoint and finished.is_file():
            per_seed.append(json.loads(finished.read_text()))
            continue
        epochs = args.num_train_epochs or reference_epochs(shots, dataset)
        seed_args = dataclasses.replace(
            args, output_dir=str(seed_dir), num_train_epochs=epochs, push_to_hub=False
        )
        resume = bool(args.resume_from_checkpoint) and get_last_checkpoint(seed_dir) is not None
        repo_id = args.hub_model_id or Path(args.output_dir).name
        result = run_coop_seed(
            backbone,
            task,
            splits,
            test,
            seed_args,
            seed=seed,
            shots=shots,
            model_kwargs=model_kwargs,
            zeroshot_accuracy=zeroshot["accuracy"],
            compute_loss_func=compute_loss_func,
            resume_from_checkpoint=True if resume else None,
            push_to=(repo_id if len(seeds) == 1 else f"{repo_id}-seed{seed}") if args.push_to_hub else None,
        )
        if args.should_save:
            atomic_write_text(finished, json.dumps(result, indent=2) + "\n")
        per_seed.append(result)
    if method == "coop":
        extra.update(epochs=args.num_train_epochs or reference_epochs(shots, dataset), **model_kwargs)
    results = summarise(method, task, shots, seeds, per_seed, **extra)
    if args.should_save:
        write_results(results, args.output_dir)
    return results
