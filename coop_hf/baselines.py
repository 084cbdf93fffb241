"""The baselines CoOp is compared with: zero-shot CLIP (one template or an ensemble) and the linear probe, on any
backbone of `coop_hf.backbones`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from .backbones import Backbone, backbone_for

logger = logging.get_logger(__name__)

COARSE_C_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)


@torch.no_grad()
def zero_shot_weights(
    clip: PreTrainedModel | Backbone,
    tokenizer: PreTrainedTokenizerBase,
    classnames: list[str],
    templates: list[str],
    batch_size: int = 256,
    *,
    normalize_each: bool = True,
) -> torch.Tensor:
    """[classes, projection_dim] normalised class weights: each template's normalised text features (tokenized as
    the backbone was trained: `Backbone.tokenize`), averaged over the templates and renormalised (with one template,
    simply its normalised features). `normalize_each=False` averages the raw features instead (PromptSRC's)."""
    backbone = backbone_for(clip)
    per_template = []
    for template in templates:
        texts = [template.format(name) for name in classnames]
        features = []
        for start in range(0, len(texts), batch_size):
            inputs = backbone.tokenize(tokenizer, texts[start : start + batch_size])
            features.append(backbone.text_features({key: value.to(backbone.device) for key, value in inputs.items()}))
        features = torch.cat(features)
        per_template.append(F.normalize(features, dim=-1) if normalize_each else features)
    return F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)


@torch.no_grad()
def zero_shot_logits(
    clip: PreTrainedModel | Backbone, class_weights: torch.Tensor, image_embeds: torch.Tensor
) -> torch.Tensor:
    """The backbone's scaled cosine similarities (plus SigLIP's bias) between image features and normalised class
    weights."""
    image_embeds = F.normalize(image_embeds.to(class_weights), dim=-1)
    return backbone_for(clip).logits(image_embeds, class_weights)


@dataclass
class LinearProbe:
    """A multinomial logistic regression on L2-normalised frozen CLIP image features."""

    coef: np.ndarray  # [classes, dim]
    intercept: np.ndarray  # [classes]
    classes: np.ndarray  # the label of each row of `coef`: the labels seen in training, sorted
    C: float
    val_accuracy: float | None = None

    def predict(self, features: np.ndarray) -> np.ndarray:
        logits = _normalise(features) @ self.coef.T + self.intercept
        return self.classes[logits.argmax(axis=1)]


def _normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    return features / np.linalg.norm(features, axis=1, keepdims=True).clip(min=1e-12)


def search_c(
    score: Callable[[float], float], *, bisection_steps: int = 8, progress: bool = True
) -> tuple[float, float]:
    """CoOp's search for the inverse regularisation C (`lpclip/linear_probe.py`): `score(C)` (the validation
    accuracy of a fit at C) on the grid 1e6, 1e4, ..., 1e-6; from the best of it (the largest C on a tie), the
    interval [best / 10, best * 10] in log space; each step scores both ends and keeps the half towards the better
    one (the lower end on a tie). Returns the last step's better end and its score (the grid's best with no step).

    Each C is scored once, with one progress-bar tick per score."""
    scores: dict[float, float] = {}
    # The first step scores two new ends, the second none (its ends are one of those and the grid's best), each later
    # step one (the middle of the last interval).
    bar = logging.tqdm(
        total=len(COARSE_C_GRID) + (max(bisection_steps, 2) if bisection_steps else 0),
        desc="linear probe: choosing C",
        unit="fit",
        disable=not progress,
    )

    def score_at(log_c: float) -> float:
        if log_c not in scores:
            scores[log_c] = score(10.0**log_c)
            bar.update()
            bar.set_postfix(C=f"{10.0**log_c:.3g}", best_val_acc=f"{100 * max(scores.values()):.2f}")
        return scores[log_c]

    with bar:
        grid = [math.log10(c) for c in COARSE_C_GRID]
        best = max(grid, key=score_at)  # the first maximum, as np.argmax
        low, high = best - 1.0, best + 1.0
        for _ in range(bisection_steps):
            middle = (low + high) / 2
            if score_at(low) < score_at(high):
                best, low = high, middle
            else:
                best, high = low, middle
    return 10.0**best, scores[best]


def _fit_logistic_regression(
    features: torch.Tensor,
    targets: torch.Tensor,
    C: float,
    init: tuple[torch.Tensor, torch.Tensor],
    *,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise scikit-learn's objective for `LogisticRegression(C=C)`, multinomial with an unpenalised intercept,
    mean(cross-entropy) + ||coef||^2 / (2 C n) (that is 0.5 ||coef||^2 + C sum(cross-entropy), scaled), with
    full-batch L-BFGS (strong Wolfe line search) from `init`, stopping as scikit-learn's lbfgs does: when every
    partial derivative is at most `tol`, or after `max_iter` iterations. Returns (coef [classes, dim], intercept
    [classes])."""
    num_samples = len(features)
    one_hot = F.one_hot(targets, len(init[1])).to(features.dtype)
    l2 = 1.0 / (C * num_samples)
    coef, intercept = init[0].clone(), init[1].clone()
    optimizer = torch.optim.LBFGS(
        [coef, intercept],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=tol,
        tolerance_change=64 * torch.finfo(features.dtype).eps,  # scipy's ftol in scikit-learn
        history_size=10,  # scipy's L-BFGS-B default
        line_search_fn="strong_wolfe",
    )

    def closure() -> float:
        # The gradient in closed form: two matrix products, without autograd's bookkeeping.
        logits = torch.addmm(intercept, features, coef.T)
        log_norm = torch.logsumexp(logits, dim=1, keepdim=True)
        loss = (log_norm.sum() - (logits * one_hot).sum()) / num_samples + 0.5 * l2 * coef.square().sum()
        residual = (torch.exp(logits - log_norm) - one_hot) / num_samples
        coef.grad = torch.addmm(coef, residual.T, features, beta=l2)
        intercept.grad = residual.sum(dim=0)
        return loss.item()

    optimizer.step(closure)
    return coef, intercept


def _fit_sklearn(
    features: np.ndarray, labels: np.ndarray, C: float, *, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's `LogisticRegression(solver="lbfgs")`: (coef [classes, dim], intercept [classes])."""
    from sklearn.linear_model import LogisticRegression  # here: importing scikit-learn costs 0.6 s at start-up

    classifier = LogisticRegression(C=C, solver="lbfgs", tol=tol, max_iter=max_iter).fit(features, labels)
    if len(classifier.classes_) == 2:  # one binomial weight vector w: the multinomial form is (-w / 2, w / 2)
        return np.concatenate([-classifier.coef_, classifier.coef_]) / 2, np.array([-0.5, 0.5]) * classifier.intercept_
    return classifier.coef_, classifier.intercept_


def fit_linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    *,
    C: float | None = None,
    bisection_steps: int = 8,
    max_iter: int = 1000,
    tol: float = 1e-4,
    warm_start: bool = False,
    progress: bool = True,
) -> LinearProbe:
    """Fit the linear probe on L2-normalised features, choosing C on the validation split with CoOp's search
    (`search_c`; 8 steps, as the reference script), or at the given `C`.

    Each fit is scikit-learn's `LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, tol=tol)` from scratch, as
    in the reference. With `warm_start`, only the first is: each later fit minimises the same objective with the
    same stopping rule in float64 torch, from the fit at the nearest C already fitted (a 3-18x faster search in
    `benchmarks/README.md`). That stopping rule leaves a fit where its optimiser's path took it (far from the
    optimum at large C), so warm-started fits differ a little from scikit-learn's and, where the val accuracy is
    flat, the search may end at another C. `progress` shows one progress-bar tick per fit, with its C and the best
    val accuracy so far."""
    train_features, val_features = _normalise(train_features), _normalise(val_features)
    classes, targets = np.unique(np.asarray(train_labels), return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"The linear probe needs at least two classes among the training labels, got {classes}.")
    features, targets = torch.from_numpy(train_features), torch.from_numpy(targets.reshape(-1))
    val_labels = np.asarray(val_labels)
    fits: dict[float, LinearProbe] = {}

    def fit(c: float) -> float:
        if warm_start and fits:
            nearest = fits[min(fits, key=lambda fitted: abs(math.log(fitted / c)))]
            # For two classes scikit-learn fits one binomial weight vector, whose optimum is the multinomial one at
            # C / 2.
            coef, intercept = _fit_logistic_regression(
                features,
                targets,
                c / 2 if len(classes) == 2 else c,
                (torch.from_numpy(nearest.coef), torch.from_numpy(nearest.intercept)),
                tol=tol,
                max_iter=max_iter,
            )
            coef, intercept = coef.numpy(), intercept.numpy()
        else:
            coef, intercept = _fit_sklearn(train_features, targets.numpy(), c, tol=tol, max_iter=max_iter)
        accuracy = float((classes[(val_features @ coef.T + intercept).argmax(axis=1)] == val_labels).mean())
        fits[c] = LinearProbe(coef, intercept, classes, C=c, val_accuracy=accuracy)
        return accuracy

    # scipy's multithreaded OpenBLAS (in scikit-learn's L-BFGS-B) and the OpenMP threads of scikit-learn's loss and
    # torch wait on each other: on a 2-vCPU VM that made every fit 2-4 times slower, more on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if C is None:
            C, _ = search_c(fit, bisection_steps=bisection_steps, progress=progress)
        else:
            fit(C)
    _warn_once(caught)
    return fits[C]


def _warn_once(caught: list[warnings.WarningMessage]) -> None:
    """scikit-learn warns at every fit (a fit stopped at `max_iter`; "more unique classes than 50 % of the samples"
    at 1 shot): dozens per study. Each is said once per process."""
    from sklearn.exceptions import ConvergenceWarning

    for warning in caught:
        message = str(warning.message).split("\n")[0]
        if issubclass(warning.category, ConvergenceWarning):
            message += " Such fits stop there, as in the reference."
        logger.warning_once(f"linear probe: {message} (shown once)")
