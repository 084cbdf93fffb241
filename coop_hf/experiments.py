"""The few-shot protocol end to end: one frozen CLIP and one dataset, CoOp or a baseline over several seeds,
optionally under label noise, and the results record every example script writes."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .arguments import METHODS, ExperimentArguments
from .atomic import atomic_write_text
from .baselines import fit_linear_probe, zero_shot_logits, zero_shot_weights
from .data import (
    CoOpTransform,
    build_few_shot_splits,
    check_images,
    ensemble_templates,
    load_dataset_splits,
    with_coop_transform,
)
from .feature_cache import encode_images
from .hub import CardResults
from .hub_access import model_load_kwargs
from .losses import DEFAULT_GCE_Q, loss_from_name
from .metrics import ClassificationAccuracy
from .modeling_coop import CoOpModel
from .noise import NO_NOISE, NoiseReport, NoiseSpec, inject_label_noise, zero_shot_class_similarity
from .prompts import resolve_n_ctx
from .run_directory import claim_run_directory, splits_fingerprint
from .training import CoOpTrainer, CoOpTrainingArguments, compute_accuracy_metrics, reference_epochs
from .upl import UPL_TOP_K, CoOpEnsemble, pseudo_label_accuracy, pseudo_label_dataset

UPL_EPOCHS = 50  # UPL trains 50 epochs on its pseudo-labelled images
NOISY_LABEL_EPOCHS = 50  # PTNL trains noisy-label prompts 50 epochs at every shot count


@dataclass
class Backbone:
    """The frozen CLIP shared by every run of an experiment, with its tokenizer and image processor."""

    name_or_path: str
    clip: CLIPModel
    tokenizer: Any
    image_processor: Any
    cache_dir: str | None = None

    @classmethod
    def load(cls, name_or_path: str, *, cache_dir: str | None = None) -> Backbone:
        load_kwargs = model_load_kwargs(name_or_path)  # fails at once, naming the flag, if it cannot load
        clip = CLIPModel.from_pretrained(name_or_path, **load_kwargs).eval()
        clip.requires_grad_(False)
        return cls(
            name_or_path=name_or_path,
            clip=clip,
            tokenizer=AutoTokenizer.from_pretrained(name_or_path, **load_kwargs),
            image_processor=AutoImageProcessor.from_pretrained(name_or_path, **load_kwargs),
            cache_dir=cache_dir,
        )

    def features(self, dataset: datasets.Dataset, *, batch_size: int) -> dict[str, torch.Tensor]:
        """Test-transform CLIP image features of a split, {"image_embeds": [N, D], "labels": [N]}, encoded once
        and cached on disk (`coop_hf.feature_cache`, under `cache_dir` or the `datasets` cache)."""
        transform = CoOpTransform(self.image_processor, train=False)
        encoded = encode_images(self.clip, dataset, transform, batch_size=batch_size, cache_dir=self.cache_dir)
        columns = encoded.select_columns(["image_embeds", "labels"])[:]
        return {"image_embeds": columns["image_embeds"], "labels": columns["labels"]}


def accuracy_percent(predictions: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Accuracy and macro accuracy in percent, from logits [N, C] or predicted ids [N]."""
    predictions = np.asarray(predictions)
    predictions = predictions.argmax(-1) if predictions.ndim == 2 else predictions
    scores = ClassificationAccuracy().compute(predictions=predictions, references=np.asarray(labels))
    return {name: 100.0 * value for name, value in scores.items()}


class Experiment:
    """One frozen CLIP on one dataset, shared by every run of a study.

    Building it reads the dataset's split files only. The test features and zero-shot accuracy are computed once,
    when a run first needs them (after its output directory was checked), and shared by every run.
    """

    def __init__(self, backbone: Backbone, dataset: str, data_dir: str | None, *, batch_size: int = 100):
        self.backbone = backbone
        self.dataset = dataset
        self.batch_size = batch_size
        self.splits, self.classnames, self.template = load_dataset_splits(dataset, data_dir)

    @classmethod
    def from_arguments(cls, experiment: ExperimentArguments, args: CoOpTrainingArguments) -> Experiment:
        """The experiment the example scripts' flags describe."""
        backbone = Backbone.load(experiment.model_name_or_path, cache_dir=experiment.feature_cache_dir)
        return cls(backbone, experiment.dataset, experiment.data_dir, batch_size=args.per_device_eval_batch_size)

    @cached_property
    def test(self) -> dict[str, torch.Tensor]:
        """Test-transform image features and labels of the whole test split (an unreadable image stops here)."""
        return self.backbone.features(self.splits["test"], batch_size=self.batch_size)

    @cached_property
    def test_dataset(self) -> datasets.Dataset:
        """The test features as a dataset for `Trainer.evaluate` (fed to `CoOpModel(image_embeds=..., labels=...)`)."""
        return datasets.Dataset.from_dict({key: value.numpy() for key, value in self.test.items()}).with_format(
            "torch"
        )

    @cached_property
    def zeroshot(self) -> dict[str, float]:
        """Zero-shot CLIP with the dataset's hand-made template on the test split."""
        return self.zero_shot_accuracy([self.template])

    def prepare(self, args: CoOpTrainingArguments, config: dict[str, Any]) -> bool:
        """Claim `args.output_dir` for a run of `config` (see `claim_run_directory`), then encode the test features
        (the main process first; the others read them from the cache). Returns whether the directory already held
        this configuration's run."""
        with args.main_process_first(desc="output directory"):
            continued = claim_run_directory(args.output_dir, config, overwrite=args.overwrite_output_dir)
        with args.main_process_first(desc="test image features"):
            self.test  # noqa: B018 (encodes and caches)
        return continued

    def run_config(self, method: str, **fields: Any) -> dict[str, Any]:
        """What a run's results depend on: the package version, the backbone, the dataset's identity and split
        fingerprint, the method and `fields` (shots, prompt, recipe, loss, noise)."""
        return {
            "coop_hf_version": version("coop-hf"),
            "method": method,
            "model_name_or_path": self.backbone.name_or_path,
            "dataset": {"name": self.dataset, "splits_fingerprint": splits_fingerprint(self.splits)},
            **fields,
        }

    def prompt_settings(self, model_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The prompt settings as the model will have them (`n_ctx` resolved against `ctx_init`)."""
        n_ctx = resolve_n_ctx(self.backbone.tokenizer, model_kwargs.get("n_ctx"), model_kwargs.get("ctx_init"))
        return {**model_kwargs, "n_ctx": n_ctx}

    def zero_shot_accuracy(self, templates: list[str]) -> dict[str, float]:
        weights = zero_shot_weights(self.backbone.clip, self.backbone.tokenizer, self.classnames, templates)
        logits = zero_shot_logits(self.backbone.clip, weights, self.test["image_embeds"])
        return accuracy_percent(logits, self.test["labels"])

    def few_shot(
        self, shots: int, seed: int, *, noise: NoiseSpec = NO_NOISE, allow_fewer: bool = False
    ) -> tuple[datasets.DatasetDict, NoiseReport | None]:
        """The seed's K-shot train and min(K, 4)-shot val splits, images checked, with the requested label noise in
        train (and in val with `noise.val`; the clean labels stay in a `clean_label` column); the report describes
        the train split."""
        splits = build_few_shot_splits(self.splits, shots, seed, allow_fewer=allow_fewer)
        check_images(splits["train"])
        check_images(splits["val"])
        if not noise.active:
            return splits, None
        similarity = None
        if noise.noise_type == "confusion":
            similarity = zero_shot_class_similarity(
                self.backbone.clip, self.backbone.tokenizer, self.classnames, [self.template]
            )
        noisy, reports = dict(splits), {}
        for name in ("train", "val") if noise.val else ("train",):
            noisy[name], reports[name] = inject_label_noise(
                splits[name],
                noise.noise_type,
                noise.rate,
                seed,
                pool=self.splits["train"],
                class_similarity=similarity,
            )
        return datasets.DatasetDict(noisy), reports["train"]

    def results(self, method: str, shots: int, seeds: list[int], per_seed: list[dict[str, Any]], **extra) -> dict:
        """The results record: mean and (population) std over seeds of the test accuracy in percent, each seed."""
        accuracies = np.array([run["accuracy"] for run in per_seed])
        return {
            "method": method,
            "dataset": self.dataset,
            "model_name_or_path": self.backbone.name_or_path,
            "num_classes": len(self.classnames),
            "shots": shots,
            "seeds": seeds,
            "accuracy": float(accuracies.mean()),
            "accuracy_std": float(accuracies.std()),
            "macro_accuracy": float(np.mean([run["macro_accuracy"] for run in per_seed])),
            "zeroshot_accuracy": self.zeroshot["accuracy"],
            **extra,
            "per_seed": per_seed,
        }

    def card_results(
        self, accuracy: float, label: str, *, description: str, hyperparameters: dict[str, Any]
    ) -> CardResults:
        """What a model card shows: this model's test accuracy against zero-shot CLIP's, and how it was trained."""
        return CardResults(
            dataset_name=self.dataset,
            dataset_id=self.dataset,
            accuracy=accuracy,
            rows=[("Zero-shot CLIP", f"{self.zeroshot['accuracy']:.2f}"), (label, f"{accuracy:.2f}")],
            description=description,
            hyperparameters=hyperparameters,
        )

    def run_zeroshot(self, seeds: list[int], args: CoOpTrainingArguments) -> dict[str, Any]:
        """Zero-shot CLIP with the dataset template (`accuracy`) and the template ensemble (`accuracy_ensemble`);
        seed-independent, reported once per seed for a uniform record."""
        templates = ensemble_templates(self.dataset)
        self.prepare(args, self.run_config("zeroshot", template=self.template, templates_ensemble=templates))
        ensemble = self.zero_shot_accuracy(templates)
        return self.results(
            "zeroshot", 0, seeds, [{"seed": seed, **self.zeroshot} for seed in seeds],
            template=self.template, accuracy_ensemble=ensemble["accuracy"], templates_ensemble=templates,
        )  # fmt: skip

    def run_linear_probe(
        self,
        shots: int,
        seeds: list[int],
        args: CoOpTrainingArguments,
        *,
        noise: NoiseSpec = NO_NOISE,
        allow_fewer: bool = False,
    ) -> dict[str, Any]:
        """The linear probe on each seed's few-shot features, C chosen on its validation split."""
        self.prepare(args, self.linear_probe_config(shots, noise=noise, allow_fewer=allow_fewer))
        per_seed = []
        for seed in seeds:
            announce(args, f"linear-probe | {self.dataset} | {shots} shots | seed {seed}")
            splits, report = self.few_shot(shots, seed, noise=noise, allow_fewer=allow_fewer)
            train = self.backbone.features(splits["train"], batch_size=self.batch_size)
            val = self.backbone.features(splits["val"], batch_size=self.batch_size)
            probe = fit_linear_probe(
                train["image_embeds"].numpy(),
                train["labels"].numpy(),
                val["image_embeds"].numpy(),
                val["labels"].numpy(),
            )
            scores = accuracy_percent(probe.predict(self.test["image_embeds"].numpy()), self.test["labels"])
            per_seed.append({"seed": seed, **scores, "C": probe.C, **noise_fields(noise, report)})
        return self.results("linear-probe", shots, seeds, per_seed, **noise_summary(noise, per_seed))

    def coop_epochs(self, shots: int, args: CoOpTrainingArguments, noise: NoiseSpec = NO_NOISE) -> float:
        """`args.num_train_epochs`, else the reference's: CoOp's by shot count, PTNL's 50 under label noise (both
        divided by `args.cached_views` when training from cached views)."""
        if args.num_train_epochs:
            return args.num_train_epochs
        epochs = NOISY_LABEL_EPOCHS if noise.active else reference_epochs(shots, self.dataset)
        return math.ceil(epochs / max(args.cached_views, 1))

    def coop_config(
        self,
        shots: int,
        args: CoOpTrainingArguments,
        model_kwargs: dict[str, Any],
        *,
        loss: str = "ce",
        gce_q: float | None = None,
        noise: NoiseSpec = NO_NOISE,
        allow_fewer: bool = False,
    ) -> dict[str, Any]:
        """The run configuration of `run_coop` with these settings (see `run_config`)."""
        return self.run_config(
            "coop", shots=shots, allow_fewer_shots=allow_fewer, prompt=self.prompt_settings(model_kwargs),
            training=training_fields(args, self.coop_epochs(shots, args, noise)), **loss_fields(loss, gce_q),
            **noise.fields(),
        )  # fmt: skip

    def linear_probe_config(self, shots: int, *, noise: NoiseSpec = NO_NOISE, allow_fewer: bool = False) -> dict:
        """The run configuration of `run_linear_probe` with these settings (see `run_config`)."""
        return self.run_config("linear-probe", shots=shots, allow_fewer_shots=allow_fewer, **noise.fields())

    def run_coop(
        self,
        shots: int,
        seeds: list[int],
        args: CoOpTrainingArguments,
        model_kwargs: dict[str, Any],
        *,
        loss: str = "ce",
        gce_q: float | None = None,
        noise: NoiseSpec = NO_NOISE,
        allow_fewer: bool = False,
        callbacks: list | None = None,
    ) -> dict[str, Any]:
        """Train one prompt per seed with the CoOp recipe on the seed's few-shot split (see `train_seeds`)."""
        epochs = self.coop_epochs(shots, args, noise)
        prompt = self.prompt_settings(model_kwargs)
        settings = dict(loss=loss, gce_q=gce_q, noise=noise, allow_fewer=allow_fewer)
        continued = self.prepare(args, self.coop_config(shots, args, model_kwargs, **settings))
        per_seed = self.train_seeds(
            lambda seed: self.few_shot(shots, seed, noise=noise, allow_fewer=allow_fewer),
            seeds, args, prompt, shots=shots, epochs=epochs, loss=loss, gce_q=gce_q, noise=noise,
            callbacks=callbacks, continued=continued,
        )  # fmt: skip
        return self.results(
            "coop", shots, seeds, per_seed, epochs=epochs, cached_views=args.cached_views, **prompt,
            **loss_fields(loss, gce_q), **noise_summary(noise, per_seed),
        )  # fmt: skip

    def run_upl(
        self,
        seeds: list[int],
        args: CoOpTrainingArguments,
        model_kwargs: dict[str, Any],
        *,
        top_k: int = UPL_TOP_K,
        pseudo_label_templates: str = "dataset",
        loss: str = "ce",
        gce_q: float | None = None,
        callbacks: list | None = None,
    ) -> dict[str, Any]:
        """Unsupervised prompt learning (UPL): pseudo-label the unlabeled train split with zero-shot CLIP (the
        dataset template, or the template "ensemble"), keep the `top_k` most confident images per predicted
        class, train one prompt per seed on them, and evaluate the ensemble that averages the seeds' logits.

        The ensemble is saved (with its model card) in `args.output_dir/ensemble` and pushed to `args.hub_model_id`
        with `args.push_to_hub`. The true train labels are used only to report `pseudo_label_accuracy`.
        """
        if pseudo_label_templates not in ("dataset", "ensemble"):
            raise ValueError(
                f"pseudo_label_templates must be 'dataset' or 'ensemble', got {pseudo_label_templates!r}."
            )
        templates = ensemble_templates(self.dataset) if pseudo_label_templates == "ensemble" else [self.template]
        epochs = args.num_train_epochs or math.ceil(UPL_EPOCHS / max(args.cached_views, 1))
        prompt = self.prompt_settings(model_kwargs)
        config = self.run_config(
            "upl", pseudo_top_k=top_k, pseudo_label_templates=templates, prompt=prompt,
            training=training_fields(args, epochs), **loss_fields(loss, gce_q),
        )  # fmt: skip
        continued = self.prepare(args, config)
        unlabeled = self.splits["train"]
        features = self.backbone.features(unlabeled, batch_size=self.batch_size)
        weights = zero_shot_weights(self.backbone.clip, self.backbone.tokenizer, self.classnames, templates)
        pseudo = pseudo_label_dataset(
            unlabeled, zero_shot_logits(self.backbone.clip, weights, features["image_embeds"]), top_k
        )
        per_seed = self.train_seeds(
            lambda seed: (datasets.DatasetDict({"train": pseudo}), None),
            seeds, args, prompt, shots=top_k, epochs=epochs, loss=loss, gce_q=gce_q, callbacks=callbacks,
            push=False, continued=continued,
        )  # fmt: skip
        clip, tokenizer = self.backbone.clip, self.backbone.tokenizer
        members = [
            CoOpModel.from_pretrained(run["prompt_dir"], clip_model=clip, tokenizer=tokenizer) for run in per_seed
        ]
        ensemble = CoOpEnsemble(members)
        with torch.no_grad():
            scores = accuracy_percent(ensemble(image_embeds=self.test["image_embeds"]).logits, self.test["labels"])
        pseudo_accuracy = 100.0 * pseudo_label_accuracy(pseudo)
        ensemble.card_results = self.card_results(
            scores["accuracy"],
            f"UPL ensemble of {len(seeds)} prompts (this model)",
            description=f"Trained without labels on the {len(pseudo)} most confident zero-shot pseudo-labels (top "
            f"{top_k} per class, pseudo-label accuracy {pseudo_accuracy:.2f} %), evaluated on the full test split.",
            hyperparameters={"pseudo-labels per class": top_k, "seeds": seeds, "epochs": epochs, "loss": loss},
        )
        ensemble_dir = Path(args.output_dir) / "ensemble"
        hub_url = None
        if args.should_save:
            ensemble.save_pretrained(ensemble_dir)
            if args.push_to_hub:
                repo_id = args.hub_model_id or Path(args.output_dir).name
                hub_url = ensemble.push_to_hub(repo_id, token=args.hub_token, private=args.hub_private_repo)
        record = self.results(
            "upl", top_k, seeds, per_seed, epochs=epochs, **prompt, **loss_fields(loss, gce_q),
            pseudo_label_templates=templates, pseudo_labels=len(pseudo), pseudo_label_accuracy=pseudo_accuracy,
            ensemble_dir=str(ensemble_dir),
        )  # fmt: skip
        record["accuracy_members_mean"] = record["accuracy"]
        record.update(accuracy=scores["accuracy"], macro_accuracy=scores["macro_accuracy"])
        record["accuracy_zeroshot"] = self.zeroshot["accuracy"]
        if hub_url is not None:
            record["hub_url"] = hub_url
        return record

    def train_seeds(
        self,
        splits_for_seed: Callable[[int], tuple[datasets.DatasetDict, NoiseReport | None]],
        seeds: list[int],
        args: CoOpTrainingArguments,
        prompt: dict[str, Any],
        *,
        shots: int,
        epochs: float,
        loss: str,
        gce_q: float | None,
        callbacks: list | None,
        noise: NoiseSpec = NO_NOISE,
        push: bool = True,
        continued: bool = False,
    ) -> list[dict[str, Any]]:
        """Train, evaluate and save one prompt per seed in `args.output_dir/seed<N>`.

        In a directory that already holds this configuration's run (`continued`), with `args.resume_from_checkpoint`
        set, seeds already finished are not trained again and an interrupted seed continues from its last
        checkpoint; without it, every seed starts afresh (its old checkpoints removed first). With
        `args.push_to_hub` (and `push`), each seed's prompt goes to `args.hub_model_id` (suffixed "-seed<N>" when
        there are several seeds).
        """
        loss_func = loss_from_name(loss, **({"q": gce_q} if gce_q is not None else {}))
        resume = continued and bool(args.resume_from_checkpoint)
        per_seed = []
        for position, seed in enumerate(seeds, start=1):
            seed_dir = Path(args.output_dir) / f"seed{seed}"
            finished = seed_dir / "seed_result.json"
            heading = f"{self.dataset} | {shots} shots | seed {seed} ({position}/{len(seeds)})"
            if resume and finished.is_file():
                announce(args, f"{heading}: already done, result read from {finished}")
                per_seed.append(json.loads(finished.read_text()))
                continue
            last_checkpoint = get_last_checkpoint(str(seed_dir)) if seed_dir.is_dir() else None
            if resume and last_checkpoint is not None:
                announce(args, f"{heading}: resuming from {last_checkpoint}")
            else:
                if args.should_save and last_checkpoint is not None:
                    for checkpoint in seed_dir.glob("checkpoint-*"):
                        shutil.rmtree(checkpoint)
                announce(args, f"{heading}: training {epochs:g} epochs -> {seed_dir}")
            splits, report = splits_for_seed(seed)
            seed_args = dataclasses.replace(args, output_dir=str(seed_dir), num_train_epochs=epochs, push_to_hub=False)
            repo_id = args.hub_model_id or Path(args.output_dir).name
            repo_id = repo_id if len(seeds) == 1 else f"{repo_id}-seed{seed}"
            result = self.train_coop_seed(
                splits, seed_args, seed=seed, shots=shots, prompt=prompt, compute_loss_func=loss_func,
                resume=resume and last_checkpoint is not None,
                push_to=repo_id if args.push_to_hub and push else None,
                callbacks=callbacks, noise=noise, noise_report=report, loss_name=loss_fields(loss, gce_q),
            )  # fmt: skip
            result.update(noise_fields(noise, report))
            if args.should_save:
                atomic_write_text(finished, json.dumps(result, indent=2) + "\n")
            announce(args, f"{heading}: test accuracy {result['accuracy']:.2f} %")
            per_seed.append(result)
        return per_seed

    def train_coop_seed(
        self,
        splits: datasets.DatasetDict,
        args: CoOpTrainingArguments,
        *,
        seed: int,
        shots: int,
        prompt: dict[str, Any],
        compute_loss_func=None,
        resume: bool = False,
        push_to: str | None = None,
        callbacks: list | None = None,
        noise: NoiseSpec = NO_NOISE,
        noise_report: NoiseReport | None = None,
        loss_name: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Train one seed's prompt, evaluate it on the test features, save it with its card (and push it)."""
        backbone = self.backbone
        set_seed(seed)
        model = CoOpModel.from_clip(backbone.clip, self.classnames, tokenizer=backbone.tokenizer, **prompt)
        model.config.base_model_name_or_path = backbone.name_or_path
        args.seed = seed
        if args.cached_views:
            train = encode_images(
                backbone.clip, splits["train"], CoOpTransform(backbone.image_processor, train=True),
                num_views=args.cached_views, seed=seed, batch_size=self.batch_size, cache_dir=backbone.cache_dir,
            ).select_columns(["image_embeds", "labels"])  # fmt: skip
        else:
            train = with_coop_transform(splits["train"], backbone.image_processor, train=True)
        trainer = CoOpTrainer(
            model=model,
            args=args,
            train_dataset=train,
            processing_class=backbone.image_processor,
            compute_metrics=compute_accuracy_metrics,
            compute_loss_func=compute_loss_func,
            callbacks=callbacks,
        )
        trainer.train(resume_from_checkpoint=True if resume else None)
        metrics = trainer.evaluate(eval_dataset=self.test_dataset, metric_key_prefix="test")
        result = {
            "seed": seed,
            "accuracy": metrics["test_accuracy"],
            "macro_accuracy": metrics["test_macro_accuracy"],
            "prompt_dir": args.output_dir,
        }
        hyperparameters = {
            "shots": shots,
            "seed": seed,
            "epochs": args.num_train_epochs,
            "optimizer": f"SGD lr {args.learning_rate}, momentum {args.momentum}, weight decay {args.weight_decay}",
            "schedule": f"{args.warmup_epochs} warm-up epoch(s) at lr {args.warmup_lr}, then cosine",
            "batch size": args.global_train_batch_size,
            "loss": describe_loss(loss_name or {"loss": "ce"}),
        }
        if noise.active:
            actual = f", {100 * noise_report.actual_rate:.1f} % actual" if noise_report is not None else ""
            where = "train and val splits" if noise.val else "train split (val clean)"
            hyperparameters["label noise"] = f"{noise.noise_type}, {100 * noise.rate:g} % requested{actual}, {where}"
        model.card_results = self.card_results(
            result["accuracy"],
            f"CoOp (this prompt, seed {seed})",
            description=f"{shots}-shot training, seed {seed}, evaluated on the full test split "
            f"({len(self.test['labels'])} images).",
            hyperparameters=hyperparameters,
        )
        trainer.save_model()
        trainer.save_state()
        if push_to is not None and args.should_save:
            result["hub_url"] = model.push_to_hub(push_to, token=args.hub_token, private=args.hub_private_repo)
        return result


def announce(args: CoOpTrainingArguments, message: str) -> None:
    """One progress line on the console, from the main process."""
    if args.should_log:
        print(f"[coop-hf] {message}", flush=True)


def training_fields(args: CoOpTrainingArguments, epochs: float) -> dict[str, Any]:
    """The training settings that change a prompt, as a run configuration records them."""
    return {
        "epochs": epochs,
        "max_steps": args.max_steps,
        "learning_rate": args.learning_rate,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "warmup_epochs": args.warmup_epochs,
        "warmup_lr": args.warmup_lr,
        "batch_size": args.global_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "keep_last_batch": args.keep_last_batch,
        "max_grad_norm": args.max_grad_norm,
        "cached_views": args.cached_views,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
    }


def describe_loss(fields: dict[str, Any]) -> str:
    """"cross-entropy", or "generalised cross-entropy (q = 0.5)"."""
    if fields["loss"] == "gce":
        return f"generalised cross-entropy (q = {fields['gce_q']:g})"
    return "cross-entropy"


def loss_fields(loss: str, gce_q: float | None) -> dict[str, Any]:
    """Results-level loss fields: the loss name, and q for the generalised cross-entropy."""
    return {"loss": loss} | ({"gce_q": gce_q if gce_q is not None else DEFAULT_GCE_Q} if loss == "gce" else {})


def noise_fields(noise: NoiseSpec, report: NoiseReport | None) -> dict[str, Any]:
    """Per-seed noise record: the requested and the actual rate of the seed's noisy train split."""
    if not noise.active:
        return {}
    return {"noise_rate_actual": report.actual_rate, "noisy_shots": report.num_noisy}


def noise_summary(noise: NoiseSpec, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Results-level noise fields: the scheme, the requested rate and the actual rate (mean over seeds)."""
    actual = [run["noise_rate_actual"] for run in per_seed if "noise_rate_actual" in run]
    return {
        "noise_type": noise.noise_type,
        "noise_rate_requested": noise.rate,
        "noise_rate_actual": float(np.mean(actual)) if actual else 0.0,
    }


def write_results(results: dict[str, Any], output_dir: str | os.PathLike) -> Path:
    """Write `output_dir/results.json` atomically."""
    path = Path(output_dir) / "results.json"
    atomic_write_text(path, json.dumps(results, indent=2) + "\n")
    return path


def run_method(experiment: ExperimentArguments, training_args: CoOpTrainingArguments, callbacks=None) -> dict:
    """Run the requested method for every seed and write `output_dir/results.json`."""
    if experiment.method not in METHODS:
        raise ValueError(f"Unknown --method {experiment.method!r}: use one of {', '.join(METHODS)}.")
    runner = Experiment.from_arguments(experiment, training_args)
    noise = experiment.noise()
    if experiment.method == "zeroshot":
        results = runner.run_zeroshot(experiment.seeds, training_args)
    elif experiment.method == "linear-probe":
        results = runner.run_linear_probe(
            experiment.shots, experiment.seeds, training_args, noise=noise, allow_fewer=experiment.allow_fewer_shots
        )
    else:
        results = runner.run_coop(
            experiment.shots,
            experiment.seeds,
            training_args,
            experiment.model_kwargs(),
            loss=experiment.loss,
            gce_q=experiment.gce_q,
            noise=noise,
            allow_fewer=experiment.allow_fewer_shots,
            callbacks=callbacks,
        )
    if training_args.should_save:
        write_results(results, training_args.output_dir)
    return results
