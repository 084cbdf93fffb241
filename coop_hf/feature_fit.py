"""Methods fitted on frozen image features rather than trained on pixels step by step (Tip-Adapter, Tip-Adapter-F,
LP++): their trainer gets a seed's few-shot splits as cached backbone features (`FitData`) and fits the model in
`fit`, in seconds on a CPU once the features are cached."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from transformers import PreTrainedModel
from transformers.trainer_utils import TrainOutput

from .data.transforms import RRC_SCALE, CoOpTransform
from .feature_cache import encode_images
from .training import CoOpTrainer, CoOpTrainingArguments


@dataclass
class FitData:
    """One seed's splits for a method fitted on frozen image features, encoded on first use and cached on disk
    (`coop_hf.feature_cache`): the same views for the same seed, whatever the method or the run.

    Attributes:
        clip: The frozen backbone.
        image_processor: Its image processor (sizes, mean, std of the transforms).
        train: The few-shot training split (columns "image" and "label").
        val: The few-shot validation split (CoOp's min(shots, 4) images per class).
        full_val: The whole validation split of the dataset (the classes of `train`).
        seed: The run's seed, which seeds every augmented view.
    """

    clip: PreTrainedModel
    image_processor: Any
    train: datasets.Dataset
    val: datasets.Dataset
    full_val: datasets.Dataset
    seed: int
    batch_size: int = 100
    cache_dir: str | None = None

    def train_views(
        self, num_views: int, *, crop_scale: tuple[float, float] = RRC_SCALE, first_view: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """([num_views, images, dim] unnormalised features of the seeded augmented views `first_view`, ..., [images]
        labels). Each view is cached apart from the others asked for at another `first_view`."""
        transform = CoOpTransform(self.image_processor, train=True, crop_scale=crop_scale)
        return self._encode(self.train, transform, num_views, first_view)

    def val_features(self, *, full: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """([images, dim] unnormalised test-transform features, [images] labels) of the few-shot validation split,
        or of the whole one with `full`. An empty split (the realistic protocol's, which reads no validation image)
        is an error."""
        split = self.full_val if full else self.val
        if len(split) == 0:
            raise ValueError(
                "This method selects on the validation split, which --protocol realistic does not have: use "
                "--protocol papers."
            )
        features, labels = self._encode(split, CoOpTransform(self.image_processor, False))
        return features[0], labels

    def _encode(
        self, split: datasets.Dataset, transform: CoOpTransform, num_views: int = 1, first_view: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = encode_images(
            self.clip, split, transform, num_views=num_views, seed=self.seed, first_view=first_view,
            batch_size=self.batch_size, cache_dir=self.cache_dir,
        )  # fmt: skip
        columns = encoded.select_columns(["image_embeds", "labels"])[:]
        features = columns["image_embeds"].reshape(num_views, len(split), -1)  # rows are view-major
        return features, columns["labels"][: len(split)]


class FeatureFitTrainer(CoOpTrainer, ABC):
    """A [`CoOpTrainer`] whose `train` fits the model on a seed's cached features (`fit`, written by each method)
    instead of running Trainer's loop; evaluation, `save_state` and the model card are `CoOpTrainer`'s.

    Fitting takes seconds, so an interrupted run fits again rather than resuming: a resumed seed gets the same model.
    """

    args: CoOpTrainingArguments
    uses_loss = False

    def __init__(self, *args: Any, fit_data: FitData, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fit_data = fit_data

    @classmethod
    @abstractmethod
    def describe_fit(cls, args: CoOpTrainingArguments, epochs: float) -> str:
        """What the console says the fit does ("training 20 epochs" for gradient methods)."""

    @classmethod
    @abstractmethod
    def recipe(cls, args: CoOpTrainingArguments, epochs: float) -> dict[str, Any]:
        """The model card's hyperparameter rows of the fit."""

    @property
    def progress(self) -> bool:
        """Whether the fit shows progress bars (not with --disable_tqdm, and on the main process only)."""
        return not self.args.disable_tqdm and self.is_local_process_zero()

    @abstractmethod
    def fit(self, data: FitData) -> dict[str, float]:
        """Fit `self.model` on `data`; returns the figures to log (e.g. the chosen hyperparameters)."""

    def train(self, resume_from_checkpoint: bool | str | None = None, **kwargs: Any) -> TrainOutput:
        self.check_dataset_classes(self.fit_data.train)
        start = time.perf_counter()
        self.model.eval()
        metrics = self.fit(self.fit_data)
        metrics["fit_runtime"] = round(time.perf_counter() - start, 4)
        self.state.epoch = float(self.args.num_train_epochs or 0)
        self.log(metrics)
        return TrainOutput(self.state.global_step, metrics.get("train_loss", 0.0), metrics)
