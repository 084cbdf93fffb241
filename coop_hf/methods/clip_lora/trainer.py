"""CLIP-LoRA's optimisation on the CoOp `Trainer`: AdamW over the LoRA matrices, cosine annealing of the learning
rate at every step down to 1e-6 (the reference's `CosineAnnealingLR(total_iters, eta_min=1e-6)`), no warm-up."""

from __future__ import annotations

from ...training import AdamWCosineTrainer


class CLIPLoRATrainer(AdamWCosineTrainer):
    """[`AdamWCosineTrainer`]: the reference's AdamW (`args.learning_rate`, `args.weight_decay`, betas 0.9 / 0.999)
    over the LoRA matrices and per-step cosine schedule over the run's steps (500 x shots by default: `max_steps`)."""
