"""Noise-robust training losses for prompt tuning (PTNL: Wu et al., "Why Is Prompt Tuning for Vision-Language
Models Robust to Noisy Labels?", ICCV 2023)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_GCE_Q = 0.5
"""q of the PTNL reference trainer (`GeneralizedCrossEntropy(q=0.5)`); Zhang & Sabuncu's own default is 0.7."""

LOSS_NAMES = ("ce", "gce")


class GeneralizedCrossEntropy(nn.Module):
    """Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018): mean over the batch of (1 - p_y^q) / q.

    q -> 0 recovers cross-entropy, q = 1 is the mean absolute error 1 - p_y; values in between trade CE's fast
    fitting for robustness to wrong labels. Call it with `(logits, labels)`, or pass the module itself as
    `transformers.Trainer(compute_loss_func=...)`, which calls it with `(outputs, labels, num_items_in_batch=...)`.
    """

    def __init__(self, q: float = DEFAULT_GCE_Q):
        super().__init__()
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < q <= 1.0:
            raise ValueError(
                f"GeneralizedCrossEntropy needs q in (0, 1] (q -> 0 is cross-entropy, q = 1 is MAE), got {q!r}."
            )
        self.q = float(q)

    def per_example(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[batch] losses (1 - p_y^q) / q of [batch, classes] logits against [batch] class ids."""
        if logits.dim() != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(
                f"GeneralizedCrossEntropy expects logits [batch, classes] and labels [batch], got logits "
                f"{tuple(logits.shape)} and labels {tuple(labels.shape)}."
            )
        log_p_y = F.log_softmax(logits.float(), dim=-1).gather(1, labels.long().unsqueeze(1)).squeeze(1)
        # p_y^q = exp(q log p_y) keeps gradients finite for p_y -> 0 (no pow of 0), and expm1 keeps the small-q
        # limit exact (1 - exp(x) would cancel to float32 noise when q log p_y is tiny).
        return -torch.expm1(self.q * log_p_y) / self.q

    def forward(
        self,
        logits: torch.Tensor | Mapping[str, torch.Tensor],
        labels: torch.Tensor | None,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """The loss of `logits` (a tensor, or model outputs holding `logits`) against `labels`.

        Without `num_items_in_batch` it is the batch mean. With it (as `Trainer` passes it under gradient
        accumulation) it is the batch sum divided by the number of labels in the whole accumulated step, which
        `Trainer` expects from a `compute_loss_func`.
        """
        if labels is None:
            raise ValueError(
                "GeneralizedCrossEntropy needs labels, got None: the batch has no 'labels' (check the dataset's "
                "label column and the data collator)."
            )
        if not torch.is_tensor(logits):
            logits = logits["logits"]
        losses = self.per_example(logits, labels)
        if num_items_in_batch is None:
            return losses.mean()
        return losses.sum() / num_items_in_batch

    def extra_repr(self) -> str:
        return f"q={self.q}"


def loss_from_name(name: str, q: float = DEFAULT_GCE_Q) -> GeneralizedCrossEntropy | None:
    """The `compute_loss_func` for a loss name: None for "ce" (the model's own cross-entropy), a
    [`GeneralizedCrossEntropy`] with this `q` for "gce"."""
    if name not in LOSS_NAMES:
        raise ValueError(
            f"Unknown loss {name!r}: use 'ce' (cross-entropy) or 'gce' (generalized cross-entropy, for noisy labels)."
        )
    return None if name == "ce" else GeneralizedCrossEntropy(q)
