"""PromptSRC's Gaussian prompt aggregation (GPA) as part of the CoOp `Trainer`: after each epoch the prompt
tensors, weighted by a Gaussian over the epochs, are added to a running aggregate, and training ends with the
aggregate as the prompt, so what is evaluated and saved is the aggregate (the reference's `previous_model_gpa`)."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback, TrainerState
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from ...training import CoOpTrainer
from .modeling_promptsrc import PromptSRCModel

logger = logging.get_logger(__name__)

AGGREGATE_FILE = "prompt_aggregate.safetensors"
"""A checkpoint's running aggregate of the epochs it has finished, so that a resumed run aggregates the same."""


def gaussian_epoch_weights(epochs: int, mean: float, std: float) -> np.ndarray:
    """[epochs] weight of each epoch 1..N in the aggregate: the N(mean, std) density at the epoch, normalised to sum
    to 1 over the N epochs (the reference's `get_gauss`)."""
    epoch = np.arange(1, epochs + 1, dtype=np.float64)
    density = np.exp(-0.5 * ((epoch - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))
    return density / density.sum()


class PromptSRCTrainer(CoOpTrainer):
    """[`CoOpTrainer`] with PromptSRC's Gaussian prompt aggregation (weights: [`gaussian_epoch_weights`] of the
    model's `gpa_mean` and `gpa_std` over the run's epochs). The running aggregate is written into every checkpoint
    (`prompt_aggregate.safetensors`) and read back on resume. A run stopped before its last epoch (`max_steps`)
    keeps its last prompt, as the reference does.

    Example:

    ```python
    >>> trainer = PromptSRCTrainer(model=promptsrc_model, args=CoOpTrainingArguments("out", num_train_epochs=20))
    >>> trainer.train()  # the model now holds sum_e w_e * prompt after epoch e, w ~ N(15, 1)
    ```
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not isinstance(self.accelerator.unwrap_model(self.model), PromptSRCModel):
            raise TypeError(f"PromptSRCTrainer trains a PromptSRCModel, got {type(self.model).__name__}.")
        self.prompt_aggregate: dict[str, torch.Tensor] | None = None
        self.add_callback(_GaussianPromptAggregation(self))

    @property
    def prompt_model(self) -> PromptSRCModel:
        return self.accelerator.unwrap_model(self.model)

    def aggregate_epoch(self, epoch: int, total_epochs: int) -> None:
        """Add the prompt after `epoch` (counted from 1), weighted, to the aggregate; after the last epoch, make the
        aggregate the model's prompt."""
        config = self.prompt_model.config
        weight = float(gaussian_epoch_weights(total_epochs, config.gpa_mean, config.gpa_std)[epoch - 1])
        weighted = {name: tensor.float() * weight for name, tensor in self.prompt_model.prompt_state_dict().items()}
        if self.prompt_aggregate is None:
            self.prompt_aggregate = weighted
        else:
            self.prompt_aggregate = {name: self.prompt_aggregate[name] + weighted[name] for name in weighted}
        if epoch == total_epochs:
            self.prompt_model.load_prompt(self.prompt_aggregate, source="the Gaussian prompt aggregate")

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        self.prompt_aggregate = None
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save and self.prompt_aggregate is not None:
            checkpoint = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            path = os.path.join(self._get_output_dir(trial=trial), checkpoint, AGGREGATE_FILE)
            save_file({name: tensor.contiguous() for name, tensor in self.prompt_aggregate.items()}, path)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, AGGREGATE_FILE)
        if os.path.isfile(path):
            device = next(iter(self.prompt_model.prompt_state_dict().values())).device
            self.prompt_aggregate = load_file(path, device=str(device))
            return
        state = TrainerState.load_from_json(os.path.join(resume_from_checkpoint, TRAINER_STATE_NAME))
        epochs_done = math.floor(state.epoch)
        if epochs_done >= 1:
            raise ValueError(
                f"{resume_from_checkpoint} (after epoch {epochs_done}) holds no {AGGREGATE_FILE}, so PromptSRC's "
                "prompt aggregate of its earlier epochs is lost: start afresh (drop --resume_from_checkpoint)."
            )


class _GaussianPromptAggregation(TrainerCallback):
    """Calls the trainer's `aggregate_epoch` at the end of every epoch (before that epoch's checkpoint)."""

    def __init__(self, trainer: PromptSRCTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        config, epochs = self.trainer.prompt_model.config, math.ceil(state.num_train_epochs)
        if not 1 <= config.gpa_mean <= epochs:
            nearest = 1 if config.gpa_mean < 1 else epochs
            logger.warning(
                f"PromptSRC's prompt aggregation is centred on epoch {config.gpa_mean:g} (--gpa_mean) but the run has "
                f"{epochs} epochs, so the aggregate leans on the prompt of epoch {nearest}: set --gpa_mean within the "
                "run (the official few-shot config: --num_train_epochs 50 --gpa_mean 30 --gpa_std 30)."
            )

    def on_epoch_end(self, args, state, control, **kwargs):
        self.trainer.aggregate_epoch(round(state.epoch), math.ceil(state.num_train_epochs))
