"""Zero-shot CLIP and the linear probe."""

import numpy as np
import torch

from coop_hf import CoOpModel
from coop_hf.baselines import COARSE_C_GRID, fit_linear_probe, zero_shot_logits, zero_shot_weights
from coop_hf.metrics import ClassificationAccuracy
from tests.conftest import random_clip, tiny_clip_config

CLASSNAMES = ["cat", "golden retriever", "sunflower"]


def test_single_template_zero_shot_equals_an_untrained_coop_prompt(clip_tokenizer):
    clip = random_clip(tiny_clip_config())
    weights = zero_shot_weights(clip, clip_tokenizer, CLASSNAMES, ["a photo of a {}."])
    coop = CoOpModel.from_clip(clip, CLASSNAMES, tokenizer=clip_tokenizer, ctx_init="a photo of a")
    image_embeds = torch.randn(5, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            zero_shot_logits(clip, weights, image_embeds), coop(image_embeds=image_embeds).logits
        )


def test_template_ensemble_averages_normalised_features(clip_tokenizer):
    clip = random_clip(tiny_clip_config())
    templates = ["a photo of a {}.", "art of the {}.", "{} texture."]
    ensemble = zero_shot_weights(clip, clip_tokenizer, CLASSNAMES, templates)
    singles = torch.stack([zero_shot_weights(clip, clip_tokenizer, CLASSNAMES, [t]) for t in templates])
    torch.testing.assert_close(ensemble, torch.nn.functional.normalize(singles.mean(0), dim=-1))
    torch.testing.assert_close(ensemble.norm(dim=-1), torch.ones(3))


def test_linear_probe_chooses_c_on_validation_and_separates_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8))

    def sample(n):
        labels = np.repeat(np.arange(4), n)
        return centres[labels] + 0.3 * rng.normal(size=(len(labels), 8)), labels

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = sample(8), sample(4), sample(25)
    probe = fit_linear_probe(train_x, train_y, val_x, val_y, bisection_steps=2)
    assert min(COARSE_C_GRID) / 10 <= probe.C <= max(COARSE_C_GRID) * 10
    assert (probe.predict(test_x) == test_y).mean() > 0.95


def test_accuracy_metric_reports_macro_accuracy():
    scores = ClassificationAccuracy().compute(predictions=[0, 0, 0, 0], references=[0, 0, 0, 1])
    assert scores["accuracy"] == 0.75 and scores["macro_accuracy"] == 0.5
