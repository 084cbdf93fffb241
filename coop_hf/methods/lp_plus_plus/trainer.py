"""Fitting LP++ as the reference's `methods/linear_probe_p2.py`: full-batch gradient descent on the cached features
of one augmented view per image, with step sizes computed from the data, no hyperparameter search."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import logging

from ...feature_fit import FeatureFitTrainer, FitData
from ...training import CoOpTrainingArguments
from .modeling_lp_plus_plus import LPPlusPlusModel

LP_CROP_SCALE = (0.5, 1.0)
"""The reference's training augmentation: RandomResizedCrop(scale=(0.5, 1)) and a horizontal flip."""
ALPHA_INIT_SCALE = 250.0
ALPHA_EVERY = 10
"""The text multipliers take one step every this many epochs."""
MOMENTUM = 0.9


def lp_plus_plus_step_sizes(
    features: torch.Tensor, labels: torch.Tensor, text: torch.Tensor
) -> tuple[float, float, float]:
    """(lr of the linear layer, lr of alpha, initial alpha) from the normalised features [N, dim], their labels and
    the text embeddings [classes, dim], as the reference's `calculate_lr_w`, `calculate_lr_alpha` and
    `calculate_init_alpha`: 4 N / the largest eigenvalue of F^T F; N / (4 max_k sum_i (f_i . t_k)^2); 250 times the
    mean over classes of the class's own text logit averaged over its images."""
    num = len(features)
    lr_weight = 4 * num / torch.linalg.eigvalsh((features.T @ features).double()).max().item()
    text_logits = features @ text.T
    lr_alpha = num / (text_logits.pow(2).sum(dim=0).max().item() * 4)
    one_hot = F.one_hot(labels, len(text)).to(features.dtype)
    counts = one_hot.sum(dim=0)
    own = (one_hot * text_logits).sum(dim=0) / counts.clamp(min=1)
    # the mean over the classes with training images (a class that label noise emptied has none)
    return lr_weight, lr_alpha, ALPHA_INIT_SCALE * own[counts > 0].double().mean().item()


class LPPlusPlusTrainer(FeatureFitTrainer):
    """LP++ on one seeded augmented view per training image (crop scale (0.5, 1)): the linear layer starts from the
    per-class sums of the features (the reference's `compute_centroids`) and takes SGD steps (momentum 0.9) of its
    data-driven size, every 10 epochs alpha takes one step of its own size along its accumulated gradient (the
    reference never zeroes it), for `args.num_train_epochs` full-batch epochs (300). The model kept is that of the
    last epoch with the best few-shot validation accuracy, as the reference reports, or the last epoch with
    `keep_epoch="last"` (validation-free)."""

    model: LPPlusPlusModel

    @classmethod
    def describe_fit(cls, args: CoOpTrainingArguments, epochs: float) -> str:
        return f"fitting {epochs:g} full-batch epochs with data-driven step sizes"

    @classmethod
    def recipe(cls, args: CoOpTrainingArguments, epochs: float) -> dict[str, Any]:
        return {
            "epochs": epochs,
            "optimizer": "full-batch SGD, momentum 0.9, step sizes from the features (no search)",
            "epoch kept": "last best validation accuracy (the last with --keep_epoch last)",
        }

    def fit(self, data: FitData) -> dict[str, float]:
        model = self.model
        device = model.text_embeds.device
        views, labels = data.train_views(1, crop_scale=LP_CROP_SCALE)
        features, labels = F.normalize(views[0].to(device).float(), dim=-1), labels.to(device)
        val = val_labels = None
        if model.config.keep_epoch == "best_validation":
            val, val_labels = data.val_features()
            val, val_labels = F.normalize(val.to(device).float(), dim=-1), val_labels.to(device)
        weight, bias, alpha, metrics = fit_lp_plus_plus(
            features, labels, val, val_labels, model.text_embeds, int(self.args.num_train_epochs),
            seed=self.args.seed, progress=self.progress,
        )  # fmt: skip
        model.set_fitted(weight, bias, alpha)
        return metrics


def fit_lp_plus_plus(
    features: torch.Tensor,
    labels: torch.Tensor,
    val: torch.Tensor | None,
    val_labels: torch.Tensor | None,
    text: torch.Tensor,
    epochs: int,
    *,
    seed: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """LP++'s fit on normalised features: (weight [classes, dim], bias, alpha [classes], metrics). The linear
    layer's bias starts as `nn.Linear`'s after `torch.manual_seed(seed)`, whatever drew from torch's RNG before.
    Without validation features (`val` None) the last epoch is kept."""
    if epochs < 1:
        raise ValueError(f"LP++ fits for whole epochs, at least 1: --num_train_epochs {epochs} is too few.")
    classes = len(text)
    lr_weight, lr_alpha, init_alpha = lp_plus_plus_step_sizes(features, labels, text)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = nn.Linear(features.shape[1], classes).to(features.device)
    with torch.no_grad():
        classifier.weight.copy_(F.one_hot(labels, classes).to(features.dtype).T @ features)
    alpha = torch.full((1, classes), init_alpha, device=features.device, requires_grad=True)
    optimizer = torch.optim.SGD(classifier.parameters(), lr_weight, momentum=MOMENTUM)
    text_logits = features @ text.T
    val_text_logits = None if val is None else val @ text.T
    best_correct, best = -1, None
    loss = torch.tensor(0.0)
    for epoch in logging.tqdm(range(epochs), desc="LP++: fitting", unit="epoch", disable=not progress):
        loss = F.cross_entropy(classifier(features) + alpha * text_logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (epoch + 1) % ALPHA_EVERY == 0:
            alpha.data -= lr_alpha * alpha.grad.data
        with torch.no_grad():
            # without validation features every epoch ties at 0 and the last one is kept
            scores = None if val is None else classifier(val) + alpha * val_text_logits
            correct = 0 if scores is None else int((scores.argmax(dim=1) == val_labels).sum())
            if correct >= best_correct:
                best_correct = correct
                best = (classifier.weight.clone(), classifier.bias.clone(), alpha[0].detach().clone(), epoch)
    weight, bias, alpha_kept, epoch = best
    metrics = {
        "train_loss": loss.item(), "best_epoch": epoch + 1, "lr_weight": lr_weight, "lr_alpha": lr_alpha,
        "init_alpha": init_alpha,
    }  # fmt: skip
    if val is not None:
        metrics["val_accuracy"] = 100.0 * best_correct / len(val_labels)
    return weight, bias, alpha_kept, metrics
