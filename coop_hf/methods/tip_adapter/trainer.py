"""Fitting Tip-Adapter (the cache, then alpha and beta searched on the validation split) and Tip-Adapter-F (the
cache keys fine-tuned first), from cached image features, as the reference's `main.py` and `utils.py` do."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers.utils import logging

from ...feature_fit import FeatureFitTrainer, FitData
from ...training import CoOpTrainingArguments
from .configuration_tip_adapter import TIP_ADAPTER_CROP_SCALE
from .modeling_tip_adapter import TipAdapterModel

ADAMW_EPS = 1e-4
SEARCH_CHUNK = 2**26
"""Logits computed at once in the search ([alphas, images, classes] elements), to bound its memory."""


def search_grid(scale: float, steps: int) -> list[float]:
    """The reference's grid: `steps` values from 0.1 up to below `scale`."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


@torch.no_grad()
def search_alpha_beta(
    model: TipAdapterModel, features: torch.Tensor, labels: torch.Tensor, progress: bool = True
) -> tuple[float, float, float]:
    """The reference's `search_hp`: every (beta, alpha) of the grid (beta outer, alpha inner), keeping the first
    with the highest accuracy of `model`'s logits on the normalised `features`. Returns (beta, alpha, accuracy %);
    (0, 0, 0) when no setting classifies an image right, as the reference."""
    config = model.config
    betas = search_grid(config.search_scale[0], config.search_steps[0])
    alphas = torch.tensor(search_grid(config.search_scale[1], config.search_steps[1]), device=features.device)
    clip_logits = model.backbone.logits(features, model.text_embeds)
    affinity = features @ model.cache_keys.T
    chunk = max(SEARCH_CHUNK // max(clip_logits.numel(), 1), 1)
    best_correct, best_beta, best_alpha = 0, 0.0, 0.0
    for beta in logging.tqdm(betas, desc="Tip-Adapter: searching beta and alpha", unit="beta", disable=not progress):
        cache_logits = model.cache_logits_of(affinity, beta)
        for start in range(0, len(alphas), chunk):
            logits = clip_logits + cache_logits * alphas[start : start + chunk, None, None]
            correct = (logits.argmax(-1) == labels).sum(-1)
            top = int(correct.max())
            if top > best_correct:
                index = start + int(correct.argmax())
                best_correct, best_beta, best_alpha = top, beta, float(alphas[index])
    return best_beta, best_alpha, 100.0 * best_correct / len(labels)


class TipAdapterTrainer(FeatureFitTrainer):
    """Training-free Tip-Adapter: the cache from `augment_views` seeded augmented views per image (random resized
    crop of scale (0.5, 1) and a flip, as the reference), then alpha and beta searched on the whole validation split
    (the reference's `dataset.val`)."""

    model: TipAdapterModel

    @classmethod
    def describe_fit(cls, args: CoOpTrainingArguments, epochs: float) -> str:
        return "building the cache, alpha and beta searched on the validation split"

    @classmethod
    def recipe(cls, args: CoOpTrainingArguments, epochs: float) -> dict[str, Any]:
        return {"training": "none: cache of the few-shot features", "search": "alpha, beta on the validation split"}

    def fit(self, data: FitData) -> dict[str, float]:
        model = self.model
        device = model.cache_keys.device
        views, labels = data.train_views(model.config.augment_views, crop_scale=TIP_ADAPTER_CROP_SCALE)
        model.set_cache(F.normalize(views.to(device).mean(dim=0), dim=-1), labels.to(device))
        metrics = self.fine_tune(data)
        if max(model.config.search_steps) > 0:  # else no validation image is read
            val, val_labels = data.val_features(full=True)
            val = F.normalize(val.to(device).float(), dim=-1)
            beta, alpha, accuracy = search_alpha_beta(model, val, val_labels.to(device), self.progress)
            with torch.no_grad():
                model.alpha.fill_(alpha)
                model.beta.fill_(beta)
            metrics |= {"beta": beta, "alpha": alpha, "val_accuracy": accuracy}
        return metrics

    def fine_tune(self, data: FitData) -> dict[str, float]:
        """Nothing to fine-tune in training-free Tip-Adapter."""
        return {}


class TipAdapterFTrainer(TipAdapterTrainer):
    """Tip-Adapter-F: the cache keys fine-tuned before the search, with the reference's recipe: AdamW (eps 1e-4,
    `args.learning_rate`, `args.weight_decay`), cosine annealing at every step over all epochs, batches of
    `args.per_device_train_batch_size` in a shuffled DataLoader's order (seeded by `args.seed`), a fresh seeded
    augmented view of every image per epoch, cross-entropy (or `--loss gce`) of the logits at the initial alpha and
    beta.

    The reference keeps the epoch of best *test* accuracy; coop-hf keeps the epoch of best accuracy on the
    validation split (the first best, as the reference), so the test split never chooses the model, or the last one
    with `keep_epoch="last"` (validation-free)."""

    uses_loss = True

    @classmethod
    def describe_fit(cls, args: CoOpTrainingArguments, epochs: float) -> str:
        return (
            f"fine-tuning the cache keys {epochs:g} epoch{'s' if epochs != 1 else ''}, then searching alpha and beta"
        )

    @classmethod
    def recipe(cls, args: CoOpTrainingArguments, epochs: float) -> dict[str, Any]:
        return {
            "epochs": epochs,
            "optimizer": f"AdamW lr {args.learning_rate}, eps {ADAMW_EPS}, weight decay {args.weight_decay}",
            "schedule": "cosine annealing at every step",
            "batch size": args.per_device_train_batch_size,
            "epoch kept": "best validation accuracy (the last with --keep_epoch last)",
            "search": "alpha, beta on the validation split",
        }

    def fine_tune(self, data: FitData) -> dict[str, float]:
        model, args = self.model, self.args
        config, device = model.config, model.cache_keys.device
        epochs = int(args.num_train_epochs)
        # views after the cache's: encoded apart, so that the cache's views are those Tip-Adapter's runs cached
        views, labels = data.train_views(epochs, crop_scale=TIP_ADAPTER_CROP_SCALE, first_view=config.augment_views)
        views, labels = views.to(device), labels.to(device)
        on_validation = config.keep_epoch == "best_validation"
        if on_validation:
            val, val_labels = data.val_features(full=True)
            val, val_labels = F.normalize(val.to(device).float(), dim=-1), val_labels.to(device)
        batch_size = args.per_device_train_batch_size
        # its own generator: the order must not depend on what drew from torch's RNG before (encoding the views)
        generator = torch.Generator().manual_seed(args.seed)
        order = DataLoader(range(len(labels)), batch_size=batch_size, shuffle=True, generator=generator)
        batches = len(order)
        model.cache_keys.requires_grad_(True)
        optimizer = torch.optim.AdamW([model.cache_keys], lr=args.learning_rate, eps=ADAMW_EPS,
                                      weight_decay=args.weight_decay)  # fmt: skip
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * batches)
        best_correct, best_epoch, best_keys, losses = 0, 0, model.cache_keys.detach().clone(), []
        bar = logging.tqdm(
            total=epochs * batches, desc="Tip-Adapter-F: fine-tuning the keys", disable=not self.progress
        )
        for epoch in range(epochs):
            model.train()
            for batch in order:
                image = F.normalize(views[epoch, batch].float(), dim=-1)
                loss = self.compute_loss(model, {"image_embeds": image, "labels": labels[batch]})
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                bar.update()
            if not on_validation:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                continue
            model.eval()
            with torch.no_grad():
                correct = int((model(image_embeds=val).logits.argmax(-1) == val_labels).sum())
            if correct > best_correct:
                best_correct, best_epoch, best_keys = correct, epoch, model.cache_keys.detach().clone()
            bar.set_postfix(loss=f"{losses[-1]:.4f}", val_acc=f"{100 * correct / len(val_labels):.2f}")
        bar.close()
        if not on_validation:
            best_epoch, best_keys = epochs - 1, model.cache_keys.detach().clone()
        model.cache_keys.requires_grad_(False)
        with torch.no_grad():
            model.cache_keys.copy_(best_keys)
        self.state.global_step = epochs * batches
        return {"train_loss": sum(losses) / max(len(losses), 1), "best_epoch": best_epoch + 1}
