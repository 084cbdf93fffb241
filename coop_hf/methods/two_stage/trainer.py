"""2SFS's optimisation on the CoOp `Trainer`: one budget of steps split in two stages (the official
`run_twostage`). AdamW (betas 0.9 / 0.999) over the LayerNorms for the first `first_stage_fraction` of the steps, then
a fresh AdamW state over the classifier, initialised at that step; each stage anneals its learning rate by a cosine
over its own steps, stepped every iteration, down to 1e-6 (the official `CosineAnnealingLR(stage_steps,
eta_min=1e-6)`, created anew for stage two), no warm-up."""

from __future__ import annotations

import math
from typing import Any

import torch

from ...training import AdamWCosineTrainer

ETA_MIN = AdamWCosineTrainer.eta_min


def first_stage_steps(total_steps: int, fraction: float) -> int:
    """Steps of stage one in a budget of `total_steps`: the official `int(total_iters * n_iters_frac)`."""
    return int(total_steps * fraction)


def cosine_factor(step: int, steps: int, learning_rate: float) -> float:
    """`CosineAnnealingLR(steps, eta_min=1e-6)`'s learning rate at `step`, as a factor of `learning_rate`."""
    return (ETA_MIN + (learning_rate - ETA_MIN) * (1 + math.cos(math.pi * step / steps)) / 2) / learning_rate


class TwoStageTrainer(AdamWCosineTrainer):
    """[`CoOpTrainer`] running 2SFS's two stages within the run's steps (300 x shots by default: `max_steps`):
    stage one tunes the LayerNorms, then `TwoStageModel.start_second_stage` initialises the classifier from the
    adapted text features and stage two trains it. One AdamW (`args.learning_rate`, `args.weight_decay`) holds both
    as parameter groups; a tensor without a gradient is skipped by AdamW, so each stage updates (and decays) only its
    own, and the classifier's moments start at stage two as the official fresh optimizer's do."""

    schedule = "two stages (LayerNorms, then the classifier), each a cosine at every step to {eta_min:g}"

    def parameter_groups(self, model: torch.nn.Module) -> list:
        """The LayerNorms and the classifier, as two groups."""
        model = self.accelerator.unwrap_model(model)
        return [{"params": model.layer_norm_parameters()}, {"params": [model.classifier]}]

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None:
            optimizer = optimizer if optimizer is not None else self.optimizer
            fraction = self.accelerator.unwrap_model(self.model).config.first_stage_fraction
            first = self.first_stage_steps = first_stage_steps(num_training_steps, fraction)
            second = num_training_steps - first
            learning_rate = self.args.learning_rate

            def factor(step: int) -> float:
                if step < first:
                    return cosine_factor(step, first, learning_rate)
                return cosine_factor(step - first, second, learning_rate)

            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return self.lr_scheduler

    def optimization_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """The step, after starting stage two when its first step comes (on a run resumed in stage two, the loaded
        classifier is kept: only the stage changes)."""
        unwrapped = self.accelerator.unwrap_model(model)
        if self.state.global_step >= self.first_stage_steps and not unwrapped.second_stage:
            if self.state.global_step == self.first_stage_steps:
                unwrapped.start_second_stage()
            else:  # resumed from a checkpoint of stage two
                unwrapped.resume_second_stage()
        return super().optimization_step(model, inputs, num_items_in_batch)
