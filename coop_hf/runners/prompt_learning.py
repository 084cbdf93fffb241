"""Prompt learning on an experiment's few-shot splits: one prompt per seed, trained by `CoOpTrainer` with the
method's recipe, evaluated on the test features, saved with its model card (and pushed)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from transformers import PretrainedConfig, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .. import gradient_flow
from ..atomic import atomic_write_text
from ..data import CLEAN_LABEL, CLEAN_LABELS, CoOpTransform, column_values, with_coop_transform
from ..feature_cache import encode_images
from ..feature_fit import FitData
from ..hub import CardResults
from ..hub_access import is_local
from ..methods import MethodSpec, Recipe
from ..methods.recipes import resolve_recipes
from ..modeling_utils import PromptPreTrainedModel
from ..noise import NO_NOISE, NoiseReport, NoiseSpec
from ..training import CoOpTrainingArguments, compute_accuracy_metrics, reference_epochs
from .experiment import Experiment
from .realistic import realistic_settings
from .records import announce, describe_loss, noise_fields, noise_summary, seeds_heading, training_fields
from .settings import RunSettings

NOISY_LABEL_EPOCHS = 50  # PTNL trains noisy-label prompts 50 epochs at every shot count

SplitsForSeed = Callable[[int], tuple[datasets.DatasetDict, NoiseReport | None]]


@dataclass(frozen=True)
class PromptLearning(MethodSpec):
    """Runs one prompt-learning method (`model_class`, a [`PromptPreTrainedModel`] with `from_clip` and
    `build_config`) on an [`Experiment`]: a [`MethodSpec`] (its fields, declared there once) with the runs.

    `recipes` holds the method's [`Recipe`] per protocol (`coop_hf.methods.recipes.PROTOCOLS`); a run applies its
    protocol's (`RunSettings.protocol`). A recipe's `training` holds `CoOpTrainingArguments` values (e.g. CoCoOp's
    `{"per_device_train_batch_size": 1, "num_train_epochs": 10}`). Each replaces an argument the user left at its
    default: a flag set to the default value (`--per_device_train_batch_size 32`) counts as left out, so the recipe
    applies; `num_train_epochs` applies when no epoch count is given (see `epochs`). A recipe's `settings` replace
    the model config's defaults, and prompt flags replace them. `settings` holds the prompt settings that make this
    name the method it is when model classes are shared (CLS-Tuning's `{"learn_context": False}`): a flag
    contradicting them is an error. `defaults` holds the name's own defaults of other prompt settings (CLS-Tuning's
    fixed phrase "a photo of a"), which flags may replace.
    """

    @classmethod
    def from_spec(cls, spec: MethodSpec) -> PromptLearning:
        """The runner of a registered `--method` (`coop_hf.methods.registry`)."""
        return cls(**{field.name: getattr(spec, field.name) for field in dataclasses.fields(spec)})

    @property
    def display_name(self) -> str:
        """How tables and plots name the method: `label`, else the model's `method_name`."""
        return self.label or self.model_class.method_name

    def zero_shot_note(self, classes: str) -> str | None:
        """The footnote of a table whose method row (marked †) is zero-shot CLIP on `classes` it was not fitted on
        (`unfitted_classes_zero_shot`), else None."""
        if not self.model_class.unfitted_classes_zero_shot:
            return None
        return (
            f"† {self.display_name} fits nothing on {classes}: there it is zero-shot CLIP with its own class prompts."
        )

    def __post_init__(self):
        recipes = resolve_recipes(self.name, self.recipes).values()
        unknown = sorted({*(key for recipe in recipes for key in recipe.training)} - {
            *CoOpTrainingArguments.__dataclass_fields__
        })  # fmt: skip
        if unknown:
            raise ValueError(f"The recipe of method {self.name!r} names unknown training arguments: {unknown}.")
        own = {*self.settings, *self.defaults}
        own |= {key for recipe in recipes for key in recipe.dataset_settings(None)}
        own |= {key for recipe in recipes for settings in recipe.settings_by_dataset.values() for key in settings}
        unknown = sorted(own - set(self.model_class.config_class.prompt_settings()))
        if unknown:
            raise ValueError(f"The settings of method {self.name!r} name unknown prompt settings: {unknown}.")

    def recipe(self, protocol: str = "few_shot") -> Recipe:
        """The method's recipe for `protocol` (one of `coop_hf.methods.recipes.PROTOCOLS`), fallbacks followed."""
        return resolve_recipes(self.name, self.recipes)[protocol]

    def training_arguments(self, args: CoOpTrainingArguments, protocol: str = "few_shot") -> CoOpTrainingArguments:
        """`args` with the protocol's recipe values in place of the arguments left at their defaults (but the
        epochs)."""
        defaults = {name: spec.default for name, spec in type(args).__dataclass_fields__.items()}
        changes = {
            name: value
            for name, value in self.recipe(protocol).training.items()
            if name != "num_train_epochs" and getattr(args, name) == defaults[name] != value
        }
        return dataclasses.replace(args, **changes) if changes else args

    def check_arguments(self, args: CoOpTrainingArguments, loss: str) -> None:
        """Refuse what the method cannot do: `--cached_views` for a method that changes the image tower or is
        always fitted on cached features, `--gradient_flow` for a fitted method, `--loss` other than "ce" for a
        method whose loss adds its own term or that has no loss."""
        if self.fitted and (args.cached_views or args.gradient_flow):
            flag = "--cached_views" if args.cached_views else "--gradient_flow"
            raise ValueError(
                f"{self.display_name} is fitted on cached image features, not trained step by step on pixels: drop "
                f"{flag} with --method {self.name}."
            )
        if args.cached_views and not self.model_class.image_tower_frozen:
            raise ValueError(
                f"--cached_views trains on precomputed image features, but {self.model_class.method_name} changes the "
                f"image tower: drop --cached_views with --method {self.name}."
            )
        self.check_loss(loss)

    def check_loss(self, loss: str) -> None:
        """`--loss` other than "ce" replaces the model's own loss; refused for a method whose loss adds a term."""
        if loss != "ce" and self.fitted and not self.trainer_class.uses_loss:
            raise ValueError(
                f"{self.display_name} is fitted by its own procedure, which --loss {loss} cannot change: use "
                f"--loss ce with --method {self.name}."
            )
        if loss != "ce" and self.model_class.has_own_loss:
            raise ValueError(
                f"--loss {loss} would replace {self.model_class.method_name}'s own loss (cross-entropy plus its "
                f"regulariser): use --loss ce with --method {self.name}."
            )

    def method_settings(
        self, experiment: Experiment, settings: dict[str, Any], protocol: str = "few_shot", realistic: bool = False
    ) -> dict[str, Any]:
        """The prompt settings given, over the protocol's recipe settings (MaPLe's cross-dataset depth 3), over the
        method's defaults for the experiment's dataset (KgCoOp's and ProGrad's hand-crafted template per benchmark:
        `config_class.dataset_settings`). Under the realistic evaluation protocol (`realistic`) one recipe serves
        every dataset: no per-dataset setting but the class prompts, no validation search (`realistic_settings`)."""
        config_class = self.model_class.config_class
        defaults = config_class.dataset_settings(experiment.dataset)
        if realistic:
            defaults = realistic_settings(defaults, tuple(config_class.prompt_settings()))
        given = {key: value for key, value in settings.items() if value is not None}
        contradicted = [key for key, value in given.items() if key in self.settings and value != self.settings[key]]
        if contradicted:
            fixed = ", ".join(f"--{key} {self.settings[key]!r}" for key in contradicted)
            raise ValueError(f"--method {self.name} fixes {fixed}; drop the flag or choose another method.")
        recipe = self.recipe(protocol).dataset_settings(None if realistic else experiment.dataset)
        forced = realistic_settings({}, tuple(config_class.prompt_settings())) if realistic else {}
        overruled = [key for key, value in given.items() if key in forced and value != forced[key]]
        if overruled:
            fixed = ", ".join(f"--{key} {forced[key]!r}" for key in overruled)
            raise ValueError(
                f"--protocol realistic fixes {fixed} (no validation search); drop the flag or use --protocol papers."
            )
        return {**defaults, **self.defaults, **recipe, **self.settings, **given, **forced}

    def prompt_config(
        self, experiment: Experiment, settings: dict[str, Any], protocol: str = "few_shot", realistic: bool = False
    ) -> PretrainedConfig:
        """The model config these prompt settings give under `protocol`'s recipe (resolved, as the model will have
        it)."""
        backbone = experiment.backbone
        settings = self.method_settings(experiment, settings, protocol, realistic)
        return self.model_class.build_config(backbone.clip, experiment.classnames, backbone.tokenizer, **settings)

    def prompt_fields(
        self, experiment: Experiment, settings: dict[str, Any], protocol: str = "few_shot"
    ) -> dict[str, Any]:
        """The prompt settings as the model will have them: its config's own fields, without the class list."""
        return prompt_fields(self.prompt_config(experiment, settings, protocol))

    def epochs(
        self,
        experiment: Experiment,
        shots: int,
        args: CoOpTrainingArguments,
        noise: NoiseSpec = NO_NOISE,
        protocol: str = "few_shot",
        realistic: bool = False,
    ) -> float:
        """`args.num_train_epochs`, else the protocol's recipe epochs (on the experiment's dataset), else the
        reference's: CoOp's by shot count, PTNL's 50 under label noise (all divided by `args.cached_views` when
        training from cached views). Under the realistic evaluation protocol (`realistic`) no per-dataset epochs
        apply (neither the recipe's nor CoOp's ImageNet 50)."""
        if args.num_train_epochs:
            return args.num_train_epochs
        if args.max_steps > 0:  # the epochs the steps span (what Trainer will count)
            images = shots * len(experiment.classnames)
            batches = math.ceil(images / args.global_train_batch_size)
            if args.drops_last_batch(images):
                batches = max(images // args.global_train_batch_size, 1)
            return math.ceil(args.max_steps / batches)
        recipe = self.recipe(protocol)
        dataset = None if realistic else getattr(experiment, "dataset", None)
        if dataset in recipe.epochs_by_dataset:
            epochs = recipe.epochs_by_dataset[dataset]
        elif "num_train_epochs" in recipe.training:
            epochs = recipe.training["num_train_epochs"]
        else:
            epochs = NOISY_LABEL_EPOCHS if noise.active else reference_epochs(shots, dataset)
        return math.ceil(epochs / max(args.cached_views, 1))

    def plan(
        self, experiment: Experiment, run: RunSettings, args: CoOpTrainingArguments, prompt: dict[str, Any]
    ) -> PromptRun:
        """Every setting of a run of this method resolved once, before any work: the checks, the recipe of the run's
        protocol, the epochs and the prompt config (`prompt` holds the prompt flags given)."""
        run.check_shots()
        self.check_arguments(args, run.loss)
        protocol, steps_per_shot = run.protocol, self.recipe(run.protocol).steps_per_shot
        args = self.training_arguments(args, protocol)
        if steps_per_shot and args.max_steps <= 0 and not args.num_train_epochs:
            args = dataclasses.replace(args, max_steps=steps_per_shot * run.shots)
        epochs = self.epochs(experiment, run.shots, args, run.noise, protocol, run.realistic)
        config = self.prompt_config(experiment, prompt, protocol, run.realistic)
        return PromptRun(self, experiment, run, args, epochs, config)

    def run(
        self, experiment: Experiment, run: RunSettings, args: CoOpTrainingArguments, prompt: dict[str, Any]
    ) -> dict[str, Any]:
        """Plan and execute a run (see `PromptRun.execute`); the results record."""
        return self.plan(experiment, run, args, prompt).execute()


def portable_name(name_or_path: str) -> str:
    """A Hub id as it is; a local folder as an absolute path, so that a saved prompt finds its backbone from any
    working directory."""
    return os.path.abspath(os.path.expanduser(name_or_path)) if is_local(name_or_path) else name_or_path


def prompt_fields(config: PretrainedConfig) -> dict[str, Any]:
    """A prompt config's own settings (without the class list and the backbone), as runs record them."""
    return {key: getattr(config, key) for key in config.prompt_settings()}


@dataclass
class PromptRun:
    """One run of a prompt-learning method on an experiment, every setting resolved (`PromptLearning.plan`): what
    its directory records (`run_config`) and how it trains (`execute`)."""

    method: PromptLearning
    experiment: Experiment
    run: RunSettings
    args: CoOpTrainingArguments
    """The training arguments, the method's recipe applied."""
    epochs: float
    prompt_config: PretrainedConfig
    """The prompt config every seed's model starts from."""

    @property
    def run_config(self) -> dict[str, Any]:
        """What the run's results depend on (see `Experiment.run_config`)."""
        run, prompt = self.run, prompt_fields(self.prompt_config)
        return self.experiment.run_config(
            self.method.name, shots=run.shots, allow_fewer_shots=run.allow_fewer_shots, prompt=prompt,
            training=training_fields(self.args, self.epochs), **run.loss_fields(), **run.noise.fields(),
            **run.evaluation_fields(),
        )  # fmt: skip

    def execute(self) -> dict[str, Any]:
        """Train one prompt per seed on the seed's few-shot split (see `train_seeds`); the results record."""
        experiment, run, args = self.experiment, self.run, self.args
        if not self.method.fitted and args.max_steps <= 0 and self.epochs <= args.warmup_epochs:
            announce(
                args,
                f"warning: {self.epochs:g} epoch(s) never leave the constant warm-up learning rate {args.warmup_lr:g} "
                f"(--warmup_epochs {args.warmup_epochs}), so the prompt barely moves: train more epochs "
                "(--num_train_epochs) or shorten the warm-up (--warmup_epochs 0).",
            )
        # Every seed's shots drawn and images read before the directory is claimed: a bad --shots or a corrupt
        # image must not leave a run_config.json that refuses the corrected rerun.
        shots_per_class = {seed: run.shots_per_class(len(experiment.classnames), seed) for seed in run.seeds}
        options = {"noise": run.noise, "allow_fewer": run.allow_fewer_shots}
        if run.realistic:
            draws = {seed: {"shots_per_class": shots_per_class[seed], **options} for seed in run.seeds}
        else:
            draws = dict.fromkeys(run.seeds, options)
        splits = {seed: experiment.few_shot(run.shots, seed, **draws[seed]) for seed in run.seeds}
        continued = experiment.prepare(args, self.run_config)
        per_seed = self.train_seeds(splits.__getitem__, continued=continued)
        if run.realistic:
            per_seed = [{**result, "shots_per_class": shots_per_class[result["seed"]]} for result in per_seed]
        return experiment.results(
            self.method.name, run.shots, run.seeds, per_seed, epochs=self.epochs, cached_views=self.args.cached_views,
            **prompt_fields(self.prompt_config), **run.loss_fields(), **noise_summary(run.noise, per_seed),
            **run.evaluation_fields(),
        )  # fmt: skip

    def train_seeds(
        self, splits_for_seed: SplitsForSeed, *, push: bool = True, continued: bool = False
    ) -> list[dict[str, Any]]:
        """Train, evaluate and save one prompt per seed in `args.output_dir/seed<N>`.

        In a directory that already holds this configuration's run (`continued`), with `args.resume_from_checkpoint`
        set, seeds already finished are not trained again and an interrupted seed continues from its last
        checkpoint; without it, every seed starts afresh (its old checkpoints removed first). With
        `args.push_to_hub` (and `push`), each seed's prompt goes to `args.hub_model_id` (suffixed "-seed<N>" when
        there are several seeds).
        """
        args, seeds, noise = self.args, self.run.seeds, self.run.noise
        resume = continued and bool(args.resume_from_checkpoint)
        per_seed = []
        for position, seed in enumerate(seeds, start=1):
            seed_dir = Path(args.output_dir) / f"seed{seed}"
            finished = seed_dir / "seed_result.json"
            heading = seeds_heading(
                self.method.name, self.experiment.dataset, self.run.shots, seed, position, len(seeds)
            )
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
                announce(args, f"{heading}: {self.describe_training()} -> {seed_dir}")
            splits, report = splits_for_seed(seed)
            seed_args = dataclasses.replace(
                args, output_dir=str(seed_dir), num_train_epochs=self.epochs, push_to_hub=False
            )
            repo_id = args.hub_model_id or Path(args.output_dir).name
            repo_id = repo_id if len(seeds) == 1 else f"{repo_id}-seed{seed}"
            result = self.train_seed(
                splits, seed_args, seed=seed, resume=resume and last_checkpoint is not None,
                push_to=repo_id if args.push_to_hub and push else None, noise_report=report,
            )  # fmt: skip
            result.update(noise_fields(noise, report))
            if args.should_save:
                atomic_write_text(finished, json.dumps(result, indent=2) + "\n")
            announce(args, f"{heading}: test accuracy {result['accuracy']:.2f} %")
            per_seed.append(result)
        return per_seed

    def full_validation_split(self, splits: datasets.DatasetDict) -> datasets.Dataset:
        """The validation split a fitted method may search on whole (Tip-Adapter's): the dataset's, or the seed's
        few-shot one where the dataset has none or where its labels must be noisy (`--noise_val`)."""
        dataset_splits = self.experiment.splits  # base-to-new's class subsets are drawn each time it is read
        if self.run.realistic or "val" not in dataset_splits or (self.run.noise.active and self.run.noise.val):
            return splits["val"]
        return dataset_splits["val"]

    def describe_training(self) -> str:
        """What the console says a seed's training does: "training 20 epochs", or the fit of a fitted method."""
        args, trainer_class = self.args, self.method.trainer_class
        if self.method.fitted:
            return trainer_class.describe_fit(args, self.epochs)
        length = f"{args.max_steps} steps" if args.max_steps > 0 else f"{self.epochs:g} epoch"
        return f"training {length}" + ("" if args.max_steps > 0 or self.epochs == 1 else "s")

    def train_seed(
        self,
        splits: datasets.DatasetDict,
        args: CoOpTrainingArguments,
        *,
        seed: int,
        resume: bool = False,
        push_to: str | None = None,
        noise_report: NoiseReport | None = None,
    ) -> dict[str, Any]:
        """Train one seed's prompt, evaluate it on the test split, save it with its card (and push it)."""
        set_seed(seed)
        args.seed = seed
        model = self.new_model()
        if self.method.fitted:
            train, val, extras = None, None, {"fit_data": self.fit_data(splits, seed)}
        elif args.cached_views:
            train, val, extras = self.cached_views(splits, args, seed), self.validation(splits, args), {}
        else:
            train, val, extras = self.pixels(splits, args, seed), self.validation(splits, args), {}
        trainer = self.method.trainer_class(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=val,
            processing_class=self.experiment.backbone.image_processor,
            compute_metrics=compute_accuracy_metrics,
            compute_loss_func=self.run.loss_function(),
            callbacks=self.run.callbacks,
            **extras,
        )
        trainer.train(resume_from_checkpoint=True if resume else None)
        metrics = trainer.evaluate(eval_dataset=self.experiment.test_inputs(model), metric_key_prefix="test")
        result = {
            "seed": seed,
            "accuracy": metrics["test_accuracy"],
            "macro_accuracy": metrics["test_macro_accuracy"],
            "prompt_dir": os.path.abspath(args.output_dir),
        }
        if args.gradient_flow:
            result["gradient_flow"] = gradient_flow.report(trainer.state.log_history)["summary"]
        trainer.save_state()
        if args.should_save:
            card_results = self.card_results(model, args, seed, result["accuracy"], noise_report)
            model.save_pretrained(args.output_dir, card_results=card_results)
            if push_to is not None:
                result["hub_url"] = model.push_to_hub(
                    push_to, token=args.hub_token, private=args.hub_private_repo, card_results=card_results
                )
        return result

    def new_model(self) -> PromptPreTrainedModel:
        """A fresh model of the method on the experiment's backbone, with the run's prompt settings."""
        backbone = self.experiment.backbone
        config = copy.deepcopy(self.prompt_config)
        config.base_model_name_or_path = portable_name(backbone.name_or_path)
        return self.method.model_class(
            config, clip=backbone.clip, tokenizer=backbone.tokenizer, image_processor=backbone.image_processor
        )

    def fit_data(self, splits: datasets.DatasetDict, seed: int) -> FitData:
        """A fitted method's data: the seed's splits as cached backbone features."""
        backbone, experiment = self.experiment.backbone, self.experiment
        return FitData(
            backbone.clip, backbone.image_processor, splits["train"], splits["val"],
            full_val=self.full_validation_split(splits), seed=seed, batch_size=experiment.batch_size,
            cache_dir=backbone.cache_dir,
        )  # fmt: skip

    def cached_views(self, splits: datasets.DatasetDict, args: CoOpTrainingArguments, seed: int) -> datasets.Dataset:
        """`--cached_views`: the training split's augmented views encoded once, trained on as image features."""
        backbone, experiment = self.experiment.backbone, self.experiment
        views = encode_images(
            backbone.clip, splits["train"], CoOpTransform(backbone.image_processor, train=True),
            num_views=args.cached_views, seed=seed, batch_size=experiment.batch_size, cache_dir=backbone.cache_dir,
        )  # fmt: skip
        train = views.select_columns(["image_embeds", "labels"])
        if args.gradient_flow:  # each view keeps its image's true class
            rows = np.asarray(column_values(views, "index"))
            clean_labels = np.asarray(column_values(splits["train"], CLEAN_LABEL))
            train = train.add_column(CLEAN_LABELS, clean_labels[rows].tolist())
        return train

    def pixels(self, splits: datasets.DatasetDict, args: CoOpTrainingArguments, seed: int) -> datasets.Dataset:
        """The training split through CoOp's train transform, each view seeded by (seed, epoch, image): the same on
        any process count."""
        processor = self.experiment.backbone.image_processor
        return with_coop_transform(splits["train"], processor, train=True, clean_labels=args.gradient_flow, seed=seed)

    def validation(self, splits: datasets.DatasetDict, args: CoOpTrainingArguments) -> datasets.Dataset | None:
        """With --eval_strategy epoch|steps, the few-shot validation split for the logs; the reported model stays the
        last one, as the reference's."""
        if args.eval_strategy == "no" or "val" not in splits or len(splits["val"]) == 0:
            return None
        return with_coop_transform(splits["val"], self.experiment.backbone.image_processor, train=False)

    def card_results(
        self,
        model: PromptPreTrainedModel,
        args: CoOpTrainingArguments,
        seed: int,
        accuracy: float,
        noise_report: NoiseReport | None,
    ) -> CardResults:
        """The model card's results and hyperparameters of one seed's prompt."""
        run, experiment = self.run, self.experiment
        hyperparameters = {
            "shots": run.shots,
            "seed": seed,
            **self.method.trainer_class.recipe(args, self.epochs),
            "loss": describe_loss(run.loss_fields()),
        }
        noise = run.noise
        if noise.active:
            actual = f", {100 * noise_report.actual_rate:.1f} % actual" if noise_report is not None else ""
            where = "train and val splits" if noise.val else "train split (val clean)"
            hyperparameters["label noise"] = f"{noise.noise_type}, {100 * noise.rate:g} % requested{actual}, {where}"
        return experiment.card_results(
            accuracy,
            f"{model.method_name} (this prompt, seed {seed})",
            task=f"{run.shots}-shot image classification",
            description=f"{run.shots}-shot training, seed {seed}, evaluated on the full test split "
            f"({len(experiment.test['labels'])} images).",
            hyperparameters=hyperparameters,
        )
