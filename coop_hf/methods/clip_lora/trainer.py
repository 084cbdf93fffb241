"""CLIP-LoRA's optimisation on the CoOp `Trainer`: AdamW over the LoRA matrices, cosine annealing of the learning
rate at every step down to 1e-6 (the reference's `CosineAnnealingLR(total_iters, eta_min=1e-6)`), no warm-up."""

from __future__ import annotations

from typing import Any

import torch

from ...training import CoOpTrainer, CoOpTrainingArguments

ETA_MIN = 1e-6
BETAS = (0.9, 0.999)


class CLIPLoRATrainer(CoOpTrainer):
    """[`CoOpTrainer`] with the reference's AdamW (`args.learning_rate`, `args.weight_decay`, betas 0.9 / 0.999) and
    per-step cosine schedule over the run's steps (500 x shots by default: `max_steps`)."""

    @classmethod
    def recipe(cls, args: CoOpTrainingArguments, epochs: float) -> dict[str, Any]:
        length = {"steps": args.max_steps} if args.max_steps > 0 else {"epochs": epochs}
        return length | {
            "optimizer": f"AdamW lr {args.learning_rate}, weight decay {args.weight_decay}, betas {BETAS}",
            "schedule": f"cosine annealing at every step to {ETA_MIN:g}",
            "batch size": args.global_train_batch_size,
        }

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            model = self.model if model is None else model
            parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
            self.optimizer = torch.optim.AdamW(
                parameters, lr=self.args.learning_rate, weight_decay=self.args.weight_decay, betas=BETAS
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None:
            optimizer = optimizer if optimizer is not None else self.optimizer
            self.lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=num_training_steps, eta_min=ETA_MIN
            )
        return self.lr_scheduler
