"""Zero-shot CLIP and the linear probe."""

import inspect
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from coop_hf import CoOpModel
from coop_hf.baselines import (
    COARSE_C_GRID,
    _fit_logistic_regression,
    _normalise,
    fit_linear_probe,
    search_c,
    zero_shot_logits,
    zero_shot_weights,
)
from coop_hf.metrics import ClassificationAccuracy
from coop_hf.runners import Experiment
from tests.conftest import random_clip, tiny_clip_config
from tests.tolerances import assert_close_fp32, stages

CLASSNAMES = ["cat", "golden retriever", "sunflower"]


def test_single_template_zero_shot_equals_an_untrained_coop_prompt(clip_tokenizer):
    clip = random_clip(tiny_clip_config())
    weights = zero_shot_weights(clip, clip_tokenizer, CLASSNAMES, ["a photo of a {}."])
    coop = CoOpModel.from_clip(clip, CLASSNAMES, tokenizer=clip_tokenizer, ctx_init="a photo of a")
    image_embeds = torch.randn(5, 16)
    with torch.no_grad():
        assert_close_fp32(
            zero_shot_logits(clip, weights, image_embeds), coop(image_embeds=image_embeds).logits, depth=stages(2)
        )


def test_template_ensemble_averages_normalised_features(clip_tokenizer):
    clip = random_clip(tiny_clip_config())
    templates = ["a photo of a {}.", "art of the {}.", "{} texture."]
    ensemble = zero_shot_weights(clip, clip_tokenizer, CLASSNAMES, templates)
    singles = torch.stack([zero_shot_weights(clip, clip_tokenizer, CLASSNAMES, [t]) for t in templates])
    assert_close_fp32(ensemble, torch.nn.functional.normalize(singles.mean(0), dim=-1), depth=stages(2))
    assert_close_fp32(ensemble.norm(dim=-1), torch.ones(3), depth=1)


def clusters(num_classes, per_class, *, dim=8, spread=0.3, seed=0):
    """Gaussian clusters around fixed random centres (the same centres for every call with this `seed`)."""
    centres = np.random.default_rng(seed).normal(size=(num_classes, dim))
    rng = np.random.default_rng([seed, per_class])
    labels = np.repeat(np.arange(num_classes), per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


def test_linear_probe_chooses_c_on_validation_and_separates_clusters():
    (train_x, train_y), (val_x, val_y) = clusters(4, 8), clusters(4, 4)
    test_x, test_y = clusters(4, 25)
    probe = fit_linear_probe(train_x, train_y, val_x, val_y, progress=False)
    assert min(COARSE_C_GRID) / 10 <= probe.C <= max(COARSE_C_GRID) * 10
    assert probe.val_accuracy == (probe.predict(val_x) == val_y).mean() == 1.0
    assert (probe.predict(test_x) == test_y).mean() > 0.95


@pytest.mark.parametrize("num_classes", [5, 2])
@pytest.mark.parametrize("C", [0.1, 1.0, 10.0])
def test_torch_fit_matches_sklearn_lbfgs_at_a_fixed_c(num_classes, C):
    (train_x, train_y), (test_x, _) = clusters(num_classes, 8, dim=16, spread=1.0), clusters(num_classes, 30, dim=16)
    features, targets = torch.from_numpy(_normalise(train_x)), torch.from_numpy(train_y)
    zeros = (torch.zeros(num_classes, 16, dtype=torch.float64), torch.zeros(num_classes, dtype=torch.float64))
    # scikit-learn fits one binomial weight vector for two classes: the multinomial optimum at C / 2 is that classifier
    c = C / 2 if num_classes == 2 else C

    def predict(coef, intercept):
        return (_normalise(test_x) @ coef.numpy().T + intercept.numpy()).argmax(axis=1)

    # converged tightly, both reach the optimum of the same objective
    coef, intercept = _fit_logistic_regression(features, targets, c, zeros, tol=1e-10, max_iter=10_000)
    reference = LogisticRegression(C=C, solver="lbfgs", tol=1e-10, max_iter=10_000).fit(_normalise(train_x), train_y)
    if num_classes == 2:  # the binomial weight vector is the difference of the two rows
        coef_, intercept_ = coef[1:] - coef[:1], intercept[1:] - intercept[:1]
    else:  # the multinomial intercepts are defined up to a common shift
        coef_, intercept_ = coef, intercept - intercept.mean()
        reference.intercept_ -= reference.intercept_.mean()
    np.testing.assert_allclose(coef_.numpy(), reference.coef_, atol=2e-5)
    np.testing.assert_allclose(intercept_.numpy(), reference.intercept_, atol=2e-5)
    np.testing.assert_array_equal(predict(coef, intercept), reference.predict(_normalise(test_x)))
    # with scikit-learn's default stopping rule (tol=1e-4), both stop near that optimum
    coef, intercept = _fit_logistic_regression(features, targets, c, zeros, tol=1e-4, max_iter=1000)
    reference = LogisticRegression(C=C, solver="lbfgs", max_iter=1000).fit(_normalise(train_x), train_y)
    assert (predict(coef, intercept) == reference.predict(_normalise(test_x))).mean() >= 0.97


def noisy_problem(seed=0):
    """Overlapping clusters in 4-d with a third of the train labels flipped: C matters, every fit converges fast."""
    (train_x, train_y), (val_x, val_y) = (
        clusters(6, 10, dim=4, spread=0.8, seed=seed),
        clusters(6, 4, dim=4, seed=seed),
    )
    flipped = np.random.default_rng(seed).random(len(train_y)) < 1 / 3
    train_y = np.where(flipped, (train_y + 1) % 6, train_y)
    return train_x, train_y, val_x, val_y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_default_search_is_the_sklearn_search(seed):
    train_x, train_y, val_x, val_y = noisy_problem(seed)
    fits = {}

    def sklearn_score(c):
        fits[c] = LogisticRegression(C=c, solver="lbfgs", max_iter=1000).fit(_normalise(train_x), train_y)
        return (fits[c].predict(_normalise(val_x)) == val_y).mean()

    best_c, best_val = search_c(sklearn_score, progress=False)
    probe = fit_linear_probe(train_x, train_y, val_x, val_y, progress=False)
    assert (probe.C, probe.val_accuracy) == (best_c, best_val)
    np.testing.assert_array_equal(probe.coef, fits[best_c].coef_)


def test_warm_started_fits_reach_sklearn_optimum():
    train_x, train_y, val_x, val_y = noisy_problem()
    # tightly converged, the search's last fit (warm-started, torch's L-BFGS) is scikit-learn's optimum at its C
    probe = fit_linear_probe(train_x, train_y, val_x, val_y, tol=1e-10, warm_start=True, progress=False)
    reference = LogisticRegression(C=probe.C, tol=1e-10, max_iter=10_000).fit(_normalise(train_x), train_y)
    np.testing.assert_allclose(probe.coef, reference.coef_, atol=1e-4)
    np.testing.assert_array_equal(probe.predict(val_x), reference.predict(_normalise(val_x)))


@pytest.mark.parametrize("warm_start", [False, True])
def test_two_class_probe_is_sklearn_binomial_fit(warm_start):
    (train_x, train_y), (val_x, val_y) = clusters(2, 10, spread=1.5), clusters(2, 4, spread=1.5)
    probe = fit_linear_probe(train_x, train_y, val_x, val_y, tol=1e-10, warm_start=warm_start, progress=False)
    reference = LogisticRegression(C=probe.C, tol=1e-10, max_iter=10_000).fit(_normalise(train_x), train_y)
    np.testing.assert_allclose(probe.coef[1] - probe.coef[0], reference.coef_[0], atol=1e-4)
    np.testing.assert_array_equal(probe.predict(val_x), reference.predict(_normalise(val_x)))


def test_linear_probe_keeps_the_training_labels():
    train_x, train_y = clusters(3, 6)
    labels = np.array([7, 11, 40])[train_y]  # sparse label ids, class 11 missing from val
    probe = fit_linear_probe(train_x, labels, train_x[train_y != 1], labels[train_y != 1], progress=False)
    np.testing.assert_array_equal(probe.classes, [7, 11, 40])
    np.testing.assert_array_equal(probe.predict(train_x), labels)
    with pytest.raises(ValueError, match="at least two classes"):
        fit_linear_probe(train_x, np.zeros_like(train_y), train_x, train_y, progress=False)


# The C values CoOp's lpclip/linear_probe.py scores, in order, and its final C, for two validation-accuracy curves
# (derived by running its search loop with a stub classifier): a peak at log10(C) = 1.3, and a plateau on
# 1.1 < log10(C) < 4.1 that exercises both tie rules (the first grid maximum, the lower end in a step).
REFERENCE_SEARCHES = [
    (
        lambda log_c: -abs(log_c - 1.3),
        [6, 4, 2, 0, -2, -4, -6, 1, 3, 1, 2, 1, 1.5, 1.25, 1.5, 1.25, 1.375, 1.25, 1.3125, 1.28125, 1.3125,
         1.296875, 1.3125],
        1.296875,
    ),
    (
        lambda log_c: float(abs(log_c - 2.6) < 1.5),
        [6, 4, 2, 0, -2, -4, -6, 3, 5, 3, 4, 3, 3.5, 3, 3.25, 3, 3.125, 3, 3.0625, 3, 3.03125, 3, 3.015625],
        3.0,
    ),
]  # fmt: skip


@pytest.mark.parametrize("curve, reference_visits, reference_final", REFERENCE_SEARCHES)
def test_c_search_is_the_reference_search(curve, reference_visits, reference_final, capsys):
    scored = []

    def score(c):
        scored.append(math.log10(c))
        return curve(math.log10(c))

    best_c, best_score = search_c(score, bisection_steps=8, progress=True)
    assert math.log10(best_c) == pytest.approx(reference_final)
    assert best_score == curve(math.log10(best_c))
    # each C once, in the reference's order
    assert scored == pytest.approx(list(dict.fromkeys(reference_visits)))
    progress = capsys.readouterr().err
    assert "15/15" in progress and "best_val_acc" in progress  # 7 grid fits, 2 + 0 + 1 per later step
    assert search_c(score, bisection_steps=0, progress=False)[0] == max(
        COARSE_C_GRID, key=lambda c: curve(math.log10(c))
    )


def test_linear_probe_chooses_c_on_the_validation_split_only():
    # The test split is no input: C and the fit depend on the train and val splits alone.
    assert list(inspect.signature(fit_linear_probe).parameters)[:4] == [
        "train_features",
        "train_labels",
        "val_features",
        "val_labels",
    ]
    # Imbalanced train labels: the strongly regularised fits predict the majority class 0 everywhere.
    train_x, train_y = clusters(4, 8, spread=1.5)
    train_x, train_y = (
        np.concatenate([train_x, train_x[train_y == 0]]),
        np.concatenate([train_y, train_y[train_y == 0]]),
    )
    val_x, val_y = clusters(4, 4, spread=1.5)
    fitted = fit_linear_probe(train_x, train_y, val_x, val_y, progress=False)
    assert fitted.C > 1e-2
    # Val labels that reward predicting the majority class move C down to the strongly regularised end.
    majority = fit_linear_probe(train_x, train_y, val_x, np.zeros_like(val_y), progress=False)
    assert majority.C < 1e-2 and majority.val_accuracy == 1.0
    again = fit_linear_probe(train_x, train_y, val_x, val_y, progress=False)
    assert again.C == fitted.C
    np.testing.assert_array_equal(again.coef, fitted.coef)


@pytest.mark.parametrize("warm_start", [False, True])
def test_linear_probe_sees_l2_normalised_features(warm_start):
    (train_x, train_y), (val_x, val_y), (test_x, _) = (
        clusters(5, 6, spread=1.0),
        clusters(5, 4, spread=1.0),
        clusters(5, 20),
    )
    probe = fit_linear_probe(train_x, train_y, val_x, val_y, warm_start=warm_start, progress=False)
    rng = np.random.default_rng(1)

    def rescaled(x):
        return x * rng.uniform(0.01, 100.0, size=(len(x), 1))

    rescaled_probe = fit_linear_probe(
        rescaled(train_x), train_y, rescaled(val_x), val_y, warm_start=warm_start, progress=False
    )
    assert rescaled_probe.C == probe.C
    np.testing.assert_allclose(rescaled_probe.coef, probe.coef, atol=1e-6)
    np.testing.assert_array_equal(rescaled_probe.predict(rescaled(test_x)), probe.predict(test_x))


def test_results_report_the_mean_and_population_std_over_seeds():
    experiment = Experiment.__new__(Experiment)  # no CLIP, no dataset: only what `results` reads
    experiment.dataset, experiment.classnames = "caltech101", ["a", "b"]
    family = type("ClipBackbone", (), {"family": "clip"})()
    experiment.backbone = type(
        "LoadedBackbone", (), {"name_or_path": "openai/clip-vit-base-patch32", "backbone": family}
    )()
    experiment.zeroshot = {"accuracy": 50.0, "macro_accuracy": 50.0}
    per_seed = [
        {"seed": seed, "accuracy": acc, "macro_accuracy": acc - 1} for seed, acc in [(1, 70.0), (2, 72.0), (3, 77.0)]
    ]
    results = experiment.results("linear-probe", 4, [1, 2, 3], per_seed)
    assert results["accuracy"] == pytest.approx(73.0)
    # population std (ddof=0): sqrt(((-3)^2 + (-1)^2 + 4^2) / 3); the sample std would be sqrt(26 / 2)
    assert results["accuracy_std"] == pytest.approx(math.sqrt(26 / 3))
    assert results["macro_accuracy"] == pytest.approx(72.0)
    assert results["per_seed"] == per_seed and results["shots"] == 4


def test_accuracy_metric_reports_macro_accuracy():
    scores = ClassificationAccuracy().compute(predictions=[0, 0, 0, 0], references=[0, 0, 0, 1])
    assert scores["accuracy"] == 0.75 and scores["macro_accuracy"] == 0.5
