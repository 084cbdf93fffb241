"""The backbone/data part of a study: one frozen backbone and one dataset, shared by every run on them.

A run (`coop_hf.runners.baselines`, `.prompt_learning`, `.upl`) takes an [`Experiment`]: its splits and class
names, the seed's few-shot splits, the test features and zero-shot accuracy (computed once), its output directory
check and the results record.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import version
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import AutoImageProcessor, PreTrainedModel

from ..backbones import Backbone, backbone_for, default_image_processor, load_backbone
from ..baselines import zero_shot_logits, zero_shot_weights
from ..data import CoOpTransform, build_few_shot_splits, check_images, load_dataset_splits, with_coop_transform
from ..data.imbalance import build_imbalanced_splits
from ..feature_cache import encode_images
from ..hub import CardResults
from ..hub_access import model_load_kwargs
from ..modeling_utils import PromptPreTrainedModel
from ..noise import NO_NOISE, NoiseReport, NoiseSpec, inject_label_noise, zero_shot_class_similarity
from ..run_directory import check_run_directory, claim_run_directory, splits_fingerprint
from ..training import CoOpTrainingArguments
from .records import accuracy_percent


@dataclass
class LoadedBackbone:
    """The frozen backbone (CLIP, MetaCLIP 2, SigLIP, SigLIP 2) shared by every run of an experiment, with its
    tokenizer and image processor."""

    name_or_path: str
    clip: PreTrainedModel
    tokenizer: Any
    image_processor: Any
    cache_dir: str | None = None

    @classmethod
    def load(cls, name_or_path: str, *, cache_dir: str | None = None) -> LoadedBackbone:
        load_kwargs = model_load_kwargs(name_or_path)  # fails at once, naming the flag, if it cannot load
        clip, tokenizer = load_backbone(name_or_path, **load_kwargs)
        clip.eval().requires_grad_(False)
        return cls(
            name_or_path=name_or_path,
            clip=clip,
            tokenizer=tokenizer,
            image_processor=backbone_for(clip).image_processor(
                default_image_processor(clip) or AutoImageProcessor.from_pretrained(name_or_path, **load_kwargs)
            ),
            cache_dir=cache_dir,
        )

    @property
    def backbone(self) -> Backbone:
        """What the methods ask of the model (`coop_hf.backbones`)."""
        return backbone_for(self.clip)

    def features(self, dataset: datasets.Dataset, *, batch_size: int) -> dict[str, torch.Tensor]:
        """Test-transform image features of a split, {"image_embeds": [N, D], "labels": [N]}, encoded once
        and cached on disk (`coop_hf.feature_cache`, under `cache_dir` or the `datasets` cache)."""
        transform = CoOpTransform(self.image_processor, train=False)
        encoded = encode_images(self.clip, dataset, transform, batch_size=batch_size, cache_dir=self.cache_dir)
        columns = encoded.select_columns(["image_embeds", "labels"])[:]
        return {"image_embeds": columns["image_embeds"], "labels": columns["labels"]}


class Experiment:
    """One frozen backbone (CLIP, MetaCLIP 2, SigLIP, SigLIP 2) on one dataset, shared by every run of a study.

    Building it reads the dataset's split files only. The test features and zero-shot accuracy are computed once,
    when a run first needs them (after its output directory was checked), and shared by every run.
    """

    def __init__(self, backbone: LoadedBackbone, dataset: str, data_dir: str | None, *, batch_size: int = 100):
        self.backbone = backbone
        self.dataset = dataset
        self.batch_size = batch_size
        self.splits, self.classnames, self.template = load_dataset_splits(dataset, data_dir)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        dataset: str,
        data_dir: str | None = None,
        *,
        feature_cache_dir: str | None = None,
        batch_size: int = 100,
    ) -> Experiment:
        """Load the backbone and read the dataset's split files."""
        backbone = LoadedBackbone.load(model_name_or_path, cache_dir=feature_cache_dir)
        return cls(backbone, dataset, data_dir, batch_size=batch_size)

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
    def test_pixels(self) -> datasets.Dataset:
        """The test split through the test transform (`pixel_values`, `labels`), for models that change the image
        tower and so may never be evaluated on the cached features."""
        return with_coop_transform(self.splits["test"], self.backbone.image_processor, train=False)

    def test_inputs(self, model: PromptPreTrainedModel | type[PromptPreTrainedModel]) -> datasets.Dataset:
        """What `Trainer.evaluate` feeds a model on the test split: the cached image features when the method
        declares `image_tower_frozen`, else pixels through its own image path."""
        return self.test_dataset if model.image_tower_frozen else self.test_pixels

    @torch.no_grad()
    def predict(self, model: PromptPreTrainedModel) -> tuple[torch.Tensor, torch.Tensor]:
        """([test images, classes] logits, [test images] labels) of the model on the test split (see
        `test_inputs`), batch by batch."""
        device = model.device
        model.eval()
        logits, labels = [], []
        for batch in DataLoader(self.test_inputs(model), batch_size=self.batch_size):
            labels.append(batch.pop("labels"))
            logits.append(model(**{key: value.to(device) for key, value in batch.items()}).logits.float().cpu())
        return torch.cat(logits), torch.cat(labels)

    @cached_property
    def zeroshot(self) -> dict[str, float]:
        """Zero-shot CLIP with the dataset's hand-made template on the test split."""
        return self.zero_shot_accuracy([self.template])

    @cached_property
    def splits_fingerprint(self) -> str:
        """Fingerprint of the class list and of every split's images and labels (`splits_fingerprint`)."""
        return splits_fingerprint(self.splits)

    def prepare(self, args: CoOpTrainingArguments, config: dict[str, Any]) -> bool:
        """Claim `args.output_dir` for a run of `config` and encode the test features (`claim_run_directories`: the
        directory checked first, claimed last, so an unreadable test image leaves nothing written). Returns whether
        the directory already held this configuration's run."""
        (continued,) = claim_run_directories(
            [self], [(args.output_dir, config)], overwrite=args.overwrite_output_dir,
            main_process_first=args.main_process_first,
        )  # fmt: skip
        return continued

    def run_config(self, method: str, **fields: Any) -> dict[str, Any]:
        """What a run's results depend on: the package version, the backbone, the dataset's identity and split
        fingerprint, the method and `fields` (shots, prompt, recipe, loss, noise)."""
        return {
            "coop_hf_version": version("coop-hf"),
            "method": method,
            "model_name_or_path": self.backbone.name_or_path,
            "dataset": {"name": self.dataset, "splits_fingerprint": self.splits_fingerprint},
            **fields,
        }

    def zero_shot_accuracy(self, templates: list[str]) -> dict[str, float]:
        weights = zero_shot_weights(self.backbone.clip, self.backbone.tokenizer, self.classnames, templates)
        logits = zero_shot_logits(self.backbone.clip, weights, self.test["image_embeds"])
        return accuracy_percent(logits, self.test["labels"])

    def few_shot(
        self,
        shots: int,
        seed: int,
        *,
        noise: NoiseSpec = NO_NOISE,
        allow_fewer: bool = False,
        shots_per_class: list[int] | None = None,
    ) -> tuple[datasets.DatasetDict, NoiseReport | None]:
        """The seed's K-shot train and min(K, 4)-shot val splits, images checked, with the requested label noise in
        train (and in val with `noise.val`; the clean labels stay in a `clean_label` column); the report describes
        the train split. With `shots_per_class` (the realistic protocol), train has that many images of each class
        and val is empty (`build_imbalanced_splits`): no validation image is read."""
        if shots_per_class is None:
            splits = build_few_shot_splits(self.splits, shots, seed, allow_fewer=allow_fewer)
        else:
            splits = build_imbalanced_splits(self.splits, shots_per_class, seed, allow_fewer=allow_fewer)
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
            "backbone_family": self.backbone.backbone.family,
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
        self, accuracy: float, label: str, *, task: str, description: str, hyperparameters: dict[str, Any]
    ) -> CardResults:
        """What a model card shows: this model's test accuracy against zero-shot CLIP's, and how it was trained."""
        return CardResults(
            dataset_name=self.dataset,
            dataset_id=self.dataset,
            accuracy=accuracy,
            task_name=task,
            rows=[
                (f"Zero-shot {self.backbone.backbone.display_name}", f"{self.zeroshot['accuracy']:.2f}"),
                (label, f"{accuracy:.2f}"),
            ],
            description=description,
            hyperparameters=hyperparameters,
        )


def claim_run_directories(
    experiments: list[Experiment],
    runs: list[tuple[str, dict[str, Any]]],
    *,
    overwrite: bool = False,
    main_process_first: Callable[..., AbstractContextManager] | None = None,
) -> list[bool]:
    """Claim the directories of `runs`, (output directory, run configuration) pairs, for runs on `experiments`:
    every directory is checked first (`check_run_directory`: one that cannot be written, or holds another
    configuration's run without `overwrite`, stops them all before any work), then each experiment's test images
    are read and encoded (an unreadable one stops them with nothing written), then every directory is claimed. In
    a launch of several processes, pass `TrainingArguments.main_process_first`. Returns, per run, whether its
    directory already held this configuration's run."""
    first = main_process_first or (lambda desc: nullcontext())
    continued = [check_run_directory(directory, config, overwrite=overwrite) for directory, config in runs]
    for experiment in dict.fromkeys(experiments):
        with first(desc="test image features"):
            experiment.test  # noqa: B018 (encodes and caches)
    for directory, config in runs:
        with first(desc="output directory"):
            claim_run_directory(directory, config, overwrite=overwrite)
    return continued
