"""Generalized cross-entropy: its CE and MAE limits, finite gradients at the extremes, and use as Trainer's
compute_loss_func."""

import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from coop_hf import CoOpModel
from coop_hf.losses import DEFAULT_GCE_Q, GeneralizedCrossEntropy, loss_from_name
from tests.conftest import random_clip, tiny_clip_config


def _batch(seed: int = 0, size: int = 8, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, classes, generator=generator) * 3, torch.randint(0, classes, (size,), generator=generator)


def test_small_q_is_cross_entropy():
    logits, labels = _batch()
    torch.testing.assert_close(
        GeneralizedCrossEntropy(q=1e-4)(logits, labels), F.cross_entropy(logits, labels), rtol=1e-3, atol=0
    )


def test_q_one_is_mean_absolute_error():
    logits, labels = _batch(1)
    p_y = logits.softmax(-1).gather(1, labels.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(GeneralizedCrossEntropy(q=1.0)(logits, labels), (1 - p_y).mean())


def test_matches_the_formula_for_the_default_q():
    logits, labels = _batch(2)
    p_y = logits.double().softmax(-1).gather(1, labels.unsqueeze(1)).squeeze(1)
    expected = ((1 - p_y**DEFAULT_GCE_Q) / DEFAULT_GCE_Q).mean().float()
    torch.testing.assert_close(GeneralizedCrossEntropy()(logits, labels), expected)


@pytest.mark.parametrize("margin", [80.0, -69.0])  # p_y ~ 1 (confident) and p_y ~ 1e-30
def test_gradients_are_finite_at_extreme_probabilities(margin):
    logits = torch.zeros(2, 3)
    logits[:, 0] = margin
    logits.requires_grad_(True)
    labels = torch.zeros(2, dtype=torch.long)
    loss = GeneralizedCrossEntropy(q=0.5)(logits, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    if margin < 0:
        p_y = logits.softmax(-1)[0, 0].item()
        assert p_y < 1e-29 and loss.item() == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("q", [0, -0.1, 1.5, True, "0.5"])
def test_q_outside_the_unit_interval_is_refused(q):
    with pytest.raises(ValueError, match=r"q in \(0, 1\]"):
        GeneralizedCrossEntropy(q=q)


def test_loss_from_name():
    assert loss_from_name("ce") is None
    loss = loss_from_name("gce", q=0.7)
    assert isinstance(loss, GeneralizedCrossEntropy) and loss.q == 0.7
    with pytest.raises(ValueError, match="'ce'.*'gce'"):
        loss_from_name("focal")


def test_compute_loss_func_signature_and_gradient_accumulation():
    logits, labels = _batch(3)
    gce = GeneralizedCrossEntropy()
    outputs = {"logits": logits}  # what a ModelOutput also answers to
    torch.testing.assert_close(gce(outputs, labels, num_items_in_batch=None), gce(logits, labels))
    # Under gradient accumulation Trainer counts the labels of the whole step: this batch is half of it.
    torch.testing.assert_close(gce(outputs, labels, num_items_in_batch=2 * len(labels)), gce(logits, labels) / 2)
    with pytest.raises(ValueError, match="needs labels"):
        gce(outputs, None)


def test_trains_a_prompt_as_trainer_compute_loss_func(clip_tokenizer, tmp_path):
    model = CoOpModel.from_clip(
        random_clip(tiny_clip_config()), ["cat", "dog", "fox"], tokenizer=clip_tokenizer, n_ctx=4
    )
    generator = torch.Generator().manual_seed(0)
    train = datasets.Dataset.from_dict(
        {"image_embeds": torch.randn(8, 16, generator=generator).tolist(), "labels": [0, 1, 2, 0, 1, 2, 0, 1]}
    ).with_format("torch")
    gce = GeneralizedCrossEntropy()
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(tmp_path),
            max_steps=2,
            per_device_train_batch_size=4,
            learning_rate=0.1,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
        ),
        train_dataset=train,
        compute_loss_func=gce,
    )
    batch = train[:4]
    with torch.no_grad():
        expected = gce(model(image_embeds=batch["image_embeds"]).logits, batch["labels"])
        computed = trainer.compute_loss(model, dict(batch))
    torch.testing.assert_close(computed, expected)
    ctx_before = model.prompt_learner.ctx.detach().clone()
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(model.prompt_learner.ctx, ctx_before)
