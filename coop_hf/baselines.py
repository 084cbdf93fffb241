"""The baselines CoOp is compared with: zero-shot CLIP (one template or an ensemble) and the linear probe."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from transformers import CLIPModel, PreTrainedTokenizerBase

COARSE_C_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)


@torch.no_grad()
def zero_shot_weights(
    clip: CLIPModel,
    tokenizer: PreTrainedTokenizerBase,
    classnames: list[str],
    templates: list[str],
    batch_size: int = 256,
) -> torch.Tensor:
    """[classes, projection_dim] normalised class weights: each template's normalised text features, averaged
    over the templates and renormalised (with one template, simply its normalised features)."""
    device = clip.logit_scale.device
    per_template = []
    for template in templates:
        texts = [template.format(name) for name in classnames]
        features = []
        for start in range(0, len(texts), batch_size):
            inputs = tokenizer(texts[start : start + batch_size], padding=True, return_tensors="pt").to(
                device
            )
            features.append(clip.get_text_features(**inputs).pooler_output)
        per_template.append(F.normalize(torch.cat(features), dim=-1))
    return F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)


@torch.no_grad()
def zero_shot_logits(
    clip: CLIPModel, class_weights: torch.Tensor, image_embeds: torch.Tensor
) -> torch.Tensor:
    """CLIP's scaled cosine similarities between image features and normalised class weights."""
    image_embeds = F.normalize(image_embeds.to(class_weights), dim=-1)
    return clip.logit_scale.exp() * image_embeds @ class_weights.t()


@dataclass
class LinearProbe:
    """An L2-regularised logistic regression on normalised frozen CLIP image features."""

    classifier: LogisticRegression
    C: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.classifier.predict(_normalise(features))


def _normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    return features / np.linalg.norm(features, axis=1, keepdims=True).clip(min=1e-12)


def fit_linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    *,
    bisection_steps: int = 4,
    max_iter: int = 1000,
) -> LinearProbe:
    """Fit the linear probe, choosing the inverse regularisation C on the validation split as the reference
    does: a coarse grid from 1e6 to 1e-6, then bisection steps in log space around the best value."""
    train_features, val_features = _normalise(train_features), _normalise(val_features)

    def fit(c: float) -> tuple[float, LogisticRegression]:
        classifier = LogisticRegression(C=c, max_iter=max_iter, solver="lbfgs")
        classifier.fit(train_features, train_labels)
        return float((classifier.predict(val_features) == val_labels).mean()), classifier

    scores = {c: fit(c) for c in COARSE_C_GRID}
    best_c = max(scores, key=lambda c: scores[c][0])
    log_low, log_high = math.log10(best_c) - 1.0, math.log10(best_c) + 1.0
    for _ in range(bisection_steps):
        middle = (log_low + log_high) / 2
        left, right = 10 ** ((log_low + middle) / 2), 10 ** ((middle + log_high) / 2)
        for c in (left, right):
            if c not in scores:
                scores[c] = fit(c)
        if scores[left][0] >= scores[right][0]:
            log_high = middle
        else:
            log_low = middle
    best_c = max(scores, key=lambda c: scores[c][0])
    return LinearProbe(classifier=scores[best_c][1], C=best_c)
