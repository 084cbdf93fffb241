"""Gradient flow under label noise (PTNL's robustness analysis, Wu et al. ICCV 2023): how strongly the clean and the
noisy training samples pull on the trained parameters, step by step.

For every training batch, each sample's data loss (cross-entropy, or the Trainer's `compute_loss_func` such as GCE,
on that sample's logits; a method's sample-independent regulariser such as KgCoOp's is left out, as it would add
the same vector to every sample's gradient) is differentiated w.r.t. the trainable parameters; the record of a step
holds the mean norm of these per-sample gradients over the clean samples (`label == clean_label`) and over the noisy
ones. [`CoOpTrainer`] records it with `--gradient_flow`, in `trainer.state.log_history` (so checkpoints and resumes
keep it) and, after training, in `gradient_flow.json` beside the prompt (`report`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

GRADIENT_FLOW_FILE = "gradient_flow.json"
# The keys of a batch's entry in Trainer's log history.
CLEAN_NORM, NOISY_NORM = "gradient_flow_clean_norm", "gradient_flow_noisy_norm"
CLEAN_SAMPLES, NOISY_SAMPLES = "gradient_flow_clean_samples", "gradient_flow_noisy_samples"


def per_sample_gradient_norms(losses: Sequence[torch.Tensor], parameters: Sequence[nn.Parameter]) -> torch.Tensor:
    """[batch] L2 norms, over all of `parameters` together, of the gradient of each of `losses` (one scalar per
    sample, from one forward pass: its graph is kept until the last). Leaves the parameters' `.grad` untouched."""
    norms = []
    for index, loss in enumerate(losses):
        grads = torch.autograd.grad(loss, parameters, retain_graph=index < len(losses) - 1, allow_unused=True)
        squares = [grad.detach().float().square().sum() for grad in grads if grad is not None]
        norms.append(torch.stack(squares).sum().sqrt() if squares else loss.new_zeros((), dtype=torch.float32))
    return torch.stack(norms)


def batch_entry(norms: torch.Tensor, clean: torch.Tensor) -> dict[str, Any]:
    """A batch's log entry: the mean gradient norm of its clean and of its noisy samples (None where it has none),
    and how many of each."""
    norms, clean = norms.detach().float().cpu(), clean.detach().bool().cpu()
    entry = {}
    for norm_key, count_key, chosen in ((CLEAN_NORM, CLEAN_SAMPLES, clean), (NOISY_NORM, NOISY_SAMPLES, ~clean)):
        count = int(chosen.sum())
        entry[norm_key] = float(norms[chosen].mean()) if count else None
        entry[count_key] = count
    return entry


def pool(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch entries pooled: the mean gradient norm of all their clean and of all their noisy samples (`clean`,
    `noisy`; None without such samples) and the counts (`clean_samples`, `noisy_samples`)."""
    pooled = {}
    for name, norm_key, count_key in (("clean", CLEAN_NORM, CLEAN_SAMPLES), ("noisy", NOISY_NORM, NOISY_SAMPLES)):
        count = sum(entry[count_key] for entry in entries)
        total = sum(entry[norm_key] * entry[count_key] for entry in entries if entry[count_key])
        pooled[name], pooled[f"{name}_samples"] = (total / count if count else None), count
    return pooled


def step_records(log_history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The gradient flow of each optimizer step from a Trainer log history (the batch entries of
    `CoOpTrainer.record_gradient_flow`): `step`, `epoch` (when the step began) and the `pool` of the step's batches
    (several under gradient accumulation)."""
    by_step: dict[int, list[Mapping[str, Any]]] = {}
    for entry in log_history:
        if CLEAN_SAMPLES in entry:
            by_step.setdefault(entry["step"], []).append(entry)
    return [
        {"step": step, "epoch": entries[-1]["epoch"], **pool(entries)} for step, entries in sorted(by_step.items())
    ]


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Means over the steps of the clean and noisy samples' mean gradient norms, and the noisy / clean ratio."""
    means = {}
    for name in ("clean", "noisy"):
        values = [record[name] for record in records if record[name] is not None]
        means[name] = sum(values) / len(values) if values else None
    clean, noisy = means["clean"], means["noisy"]
    means["noisy_to_clean"] = noisy / clean if clean and noisy is not None else None
    return means


def report(log_history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What `gradient_flow.json` holds: every step's record (`steps`, see `step_records`) and their `summary`."""
    steps = step_records(log_history)
    return {"summary": summarize(steps), "steps": steps}
