"""Fitting CLAP and ZS-LP as the reference's `ADAPTER.train` (jusiro/CLAP: trainers/adapters.py): SGD on the class
prototypes over cached features of 20 augmented views per image, CLAP adding the class-adaptive penalty toward the
zero-shot prototypes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.utils import logging

from ...data.transforms import RRC_SCALE
from ...feature_fit import FeatureFitTrainer, FitData
from ...training import CoOpTrainingArguments, warmup_cosine_factor
from .modeling_clap import CLAPModel, normalize_rows


@contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run on one intra-op thread on the CPU: the fit's steps ([256, dim] x [dim, classes] products, [classes, dim]
    updates) are too small to share, and a second thread only waits on the first, the more so when other processes
    hold the cores (at 16 shots x 100 classes, 2.6 s on one thread of a shared 2-vCPU VM against 6.6 s on two)."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def zero_shot_multipliers(logits: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """[classes] CLAP's initial penalty multipliers (`init_lagrangian_multipliers`): each class's mean zero-shot
    softmax probability of its own label over its training views. A class without training views (emptied by label
    noise; the reference divides by zero) gets the mean of the others'."""
    own = logits.float().softmax(dim=-1).gather(1, labels[:, None]).squeeze(1)
    sums = torch.zeros(classes, device=logits.device).index_add_(0, labels, own)
    counts = torch.bincount(labels, minlength=classes).to(sums)
    multipliers = sums / counts.clamp(min=1)
    present = counts > 0
    return torch.where(present, multipliers, multipliers[present].mean() if present.any() else 1.0)


def outer_step(
    distance: torch.Tensor, multipliers: torch.Tensor, penalty: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented Lagrangian outer step of the reference's `outer_step` (the PHR function's gradient): the new
    multipliers max(0, lambda + rho h) and the new penalty parameters rho = h, h the classes' squared distances to
    their zero-shot prototypes."""
    shifted = multipliers + penalty * distance
    return torch.where(shifted >= 0, shifted, torch.zeros_like(distance)), distance.clone()


def first_of_shuffle(rng: np.random.RandomState, rows: int, count: int) -> np.ndarray:
    """The first `count` indices of the reference's shuffle `rng.rand(rows).argsort()` (the same draw), found by a
    partial sort when fewer are needed."""
    keys = rng.rand(rows)
    if count >= rows:
        return keys.argsort(axis=0)
    first = np.argpartition(keys, count - 1)[:count]
    return first[keys[first].argsort()]


def fit_clap(
    views: torch.Tensor,
    labels: torch.Tensor,
    zero_shot: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | None = None,
    *,
    epochs: int,
    learning_rate: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    warmup_epochs: int = 1,
    warmup_lr: float = 1e-5,
    batch_size: int = 256,
    drop_last: bool = True,
    constraint: bool = True,
    adaptive: bool = False,
    seed: int = 0,
    data_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """The reference's fit on [views, images, dim] raw image features: (prototypes [classes, dim], multipliers
    [classes], metrics).

    The rows are the views of every image, view-major. The multipliers start at `zero_shot_multipliers` of the
    zero-shot logits of all rows. Every epoch shuffles the rows with numpy's generator seeded once with `seed` (the
    reference's global one, seeded by Dassl) and takes `images // batch_size` batches (`ceil` without `drop_last`:
    Dassl's loader length over the images, not the rows) from the front; each batch takes an SGD step on the
    prototypes of `data_loss` (cross-entropy) of the logits `logit_scale` x cosine(rows, prototypes) (+ `logit_bias`,
    SigLIP's), plus for
    CLAP the mean over classes of multiplier x squared distance to the zero-shot prototype. The learning rate is
    `warmup_lr` for `warmup_epochs`, then cosine from `learning_rate` by epoch; with `adaptive`, each epoch ends
    with the augmented Lagrangian `outer_step`.

    The gradients are written out (autograd only from the logits to a custom `data_loss`): the reference's
    autograd graph in a third of the operations, equal up to float32 rounding."""
    if epochs < 1:
        raise ValueError(f"CLAP fits for whole epochs, at least 1: --num_train_epochs {epochs} is too few.")
    num_views, num_images = views.shape[:2]
    classes = len(zero_shot)
    features = normalize_rows(views.reshape(num_views * num_images, -1).float())
    rows = labels.repeat(num_views)
    zero_shot = zero_shot.float()
    scale = torch.as_tensor(logit_scale, dtype=features.dtype, device=features.device).detach()
    bias = None if logit_bias is None else logit_bias.detach().to(features.dtype)
    multipliers = zero_shot_multipliers(features @ normalize_rows(zero_shot).T * scale, rows, classes)
    if not constraint:
        multipliers = torch.zeros_like(multipliers)
    penalty = torch.zeros_like(multipliers)
    initial = multipliers.clone()
    prototypes, velocity = zero_shot.clone(), None
    batches = num_images // batch_size if drop_last else math.ceil(num_images / batch_size)
    rng = np.random.RandomState(seed)
    losses = []
    for epoch in logging.tqdm(range(epochs), desc="CLAP: fitting", unit="epoch", disable=not progress):
        lr = warmup_lr  # the warm-up's constant rate, then the cosine from learning_rate
        if epoch >= warmup_epochs:
            lr = learning_rate * warmup_cosine_factor(
                epoch, total_epochs=epochs, warmup_epochs=warmup_epochs, warmup_ratio=1.0
            )
        order = torch.from_numpy(first_of_shuffle(rng, len(rows), batches * batch_size)).to(features.device)
        epoch_features, epoch_labels = features[order], rows[order]
        pull = multipliers[:, None] * (2.0 / classes)  # d/dp mean_k(lambda_k |p_k - z_k|^2) = pull (p - z)
        for start in range(0, len(order), batch_size):
            batch, targets = epoch_features[start : start + batch_size], epoch_labels[start : start + batch_size]
            norms = prototypes.norm(dim=-1, keepdim=True)
            unit = prototypes / norms
            cosine = batch @ unit.T
            last = start + batch_size >= len(order)
            grad_cosine, loss = data_loss_gradient(cosine, targets, scale, bias, data_loss, last)
            grad_unit = grad_cosine.T @ batch
            # through the normalisation: (g - u (g . u)) / |p|
            grad = torch.addcmul(grad_unit, unit, (grad_unit * unit).sum(-1, keepdim=True), value=-1.0).div_(norms)
            if constraint:
                grad.addcmul_(pull, prototypes - zero_shot)
            if weight_decay:
                grad.add_(prototypes, alpha=weight_decay)
            # torch.optim.SGD's momentum (no dampening, not Nesterov)
            velocity = grad if velocity is None else velocity.mul_(momentum).add_(grad)
            prototypes.add_(velocity, alpha=-lr)
            if last and loss is not None:
                penalty_term = (multipliers * (prototypes - zero_shot).pow(2).sum(-1)).mean() if constraint else 0.0
                losses.append(float(loss + penalty_term))
        if adaptive:
            multipliers, penalty = outer_step((prototypes - zero_shot).pow(2).sum(-1), multipliers, penalty)
    metrics = {
        "train_loss": losses[-1] if losses else 0.0, "batches_per_epoch": batches, "training_rows": len(rows),
        "initial_multiplier_mean": initial.mean().item(), "multiplier_mean": multipliers.mean().item(),
    }  # fmt: skip
    return prototypes, multipliers, metrics


def data_loss_gradient(
    cosine: torch.Tensor,
    targets: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    data_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    with_loss: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(d loss / d cosine, the loss where `with_loss`) of a batch whose logits are scale x cosine (+ bias):
    cross-entropy's written out (softmax minus one-hot, over the batch, times the scale; a bias shared by every
    class cancels), any other `data_loss` by autograd through the logits."""
    if data_loss is None:
        logits = cosine * scale
        probabilities = logits.softmax(dim=-1)
        loss = F.cross_entropy(logits, targets) if with_loss else None
        probabilities[torch.arange(len(targets), device=targets.device), targets] -= 1.0
        return probabilities.mul_(scale / len(targets)), loss
    cosine = cosine.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = cosine * scale
        loss = data_loss(logits if bias is None else logits + bias, targets)
        (grad,) = torch.autograd.grad(loss, cosine)
    return grad, loss.detach()


class CLAPTrainer(FeatureFitTrainer):
    """CLAP (or ZS-LP with the model's `zero_shot_constraint` False) on `augment_views` (20) seeded augmented views
    per training image (CoOp's random resized crop and flip, Dassl's defaults): `fit_clap` with `args`'
    learning rate, momentum, weight decay, warm-up, batch size, last-batch rule and epochs (the recipe: SGD lr 0.1,
    batch 256, 300 epochs), the data term `--loss` (cross-entropy). The model kept is that of the last epoch, as
    the reference evaluates it (`--load-epoch 300`); no validation split is used."""

    model: CLAPModel
    uses_loss = True

    @classmethod
    def describe_fit(cls, args: CoOpTrainingArguments, epochs: float) -> str:
        return f"fitting the class prototypes {epochs:g} epochs on cached augmented views"

    @classmethod
    def recipe(cls, args: CoOpTrainingArguments, epochs: float) -> dict[str, Any]:
        return {
            "epochs": epochs,
            "optimizer": f"SGD lr {args.learning_rate}, momentum {args.momentum}, weight decay {args.weight_decay}",
            "schedule": f"{args.warmup_epochs} warm-up epoch(s) at lr {args.warmup_lr}, then cosine",
            "batch size": args.per_device_train_batch_size,
            "epoch kept": "the last",
        }

    def fit(self, data: FitData) -> dict[str, float]:
        model, args = self.model, self.args
        config, device = model.config, model.zero_shot.device
        views, labels = data.train_views(config.augment_views, crop_scale=RRC_SCALE)  # Dassl's default crop
        views, labels = views.to(device), labels.to(device)
        backbone = model.backbone
        with one_cpu_thread(device):
            prototypes, multipliers, metrics = fit_clap(
                views, labels, model.zero_shot, backbone.logit_scale.exp(), backbone.logit_bias,
                epochs=int(args.num_train_epochs), learning_rate=args.learning_rate, momentum=args.momentum,
                weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, warmup_lr=args.warmup_lr,
                batch_size=args.per_device_train_batch_size, drop_last=args.drops_last_batch(len(labels)),
                constraint=config.zero_shot_constraint, adaptive=config.adaptive_multipliers, seed=args.seed,
                progress=self.progress,
                data_loss=self.sample_loss if self.compute_loss_func is not None else None,  # None: cross-entropy
            )  # fmt: skip
        model.set_fitted(prototypes, multipliers)
        self.state.global_step = int(args.num_train_epochs) * int(metrics["batches_per_epoch"])
        return metrics
