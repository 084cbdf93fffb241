"""The gradient-flow analysis: per-sample gradient norms of clean and noisy samples, recorded by the Trainer."""

import copy
import json

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoImageProcessor, HfArgumentParser

from coop_hf import CoOpModel
from coop_hf.data import CLEAN_LABELS, CoOpTransform, with_coop_transform
from coop_hf.gradient_flow import CLEAN_SAMPLES, GRADIENT_FLOW_FILE, per_sample_gradient_norms, pool, step_records
from coop_hf.runners import ExperimentArguments, PromptArguments
from coop_hf.runners.run import run_method
from coop_hf.training import CoOpTrainer, CoOpTrainingArguments
from tests.test_training import CLASSNAMES

NUM_IMAGES = 8
CLEAN = torch.tensor([True, True, False, True, False, True, True, False])


def test_per_sample_norms_match_the_closed_form_of_softmax_regression():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(5, 7))
    bias = torch.nn.Parameter(torch.randn(5))
    inputs = {"x": torch.randn(6, 7), "labels": torch.randint(0, 5, (6,))}

    def loss_of(sample):
        return F.cross_entropy(sample["x"] @ weight.T + bias, sample["labels"])

    norms = per_sample_gradient_norms(loss_of, [weight, bias], inputs)
    # d CE / d logits = p - onehot(y); the weight's gradient is its outer product with x, the bias's is itself.
    residual = torch.softmax(inputs["x"] @ weight.T + bias, -1) - F.one_hot(inputs["labels"], 5)
    expected = residual.norm(dim=1) * (inputs["x"].square().sum(1) + 1).sqrt()
    torch.testing.assert_close(norms, expected.detach())
    assert weight.grad is None and bias.grad is None  # the step's own gradients are left alone


def test_pooling_weighs_batches_by_their_samples_and_groups_steps():
    entries = [
        {"step": 1, "epoch": 0.5, **_entry(clean=(2.0, 3), noisy=(4.0, 1))},
        {"step": 1, "epoch": 0.5, **_entry(clean=(6.0, 1), noisy=(None, 0))},  # same step: gradient accumulation
        {"loss": 1.0, "step": 1},  # Trainer's own log entries are ignored
        {"step": 2, "epoch": 1.0, **_entry(clean=(None, 0), noisy=(1.0, 2))},
    ]
    records = step_records(entries)
    assert records == [
        {"step": 1, "epoch": 0.5, "clean": 3.0, "clean_samples": 4, "noisy": 4.0, "noisy_samples": 1},
        {"step": 2, "epoch": 1.0, "clean": None, "clean_samples": 0, "noisy": 1.0, "noisy_samples": 2},
    ]
    assert pool(entries[:2])["clean"] == 3.0


def _entry(clean, noisy):
    return {
        "gradient_flow_clean_norm": clean[0],
        "gradient_flow_clean_samples": clean[1],
        "gradient_flow_noisy_norm": noisy[0],
        "gradient_flow_noisy_samples": noisy[1],
    }


def _features_dataset(dim: int, clean_labels: bool = True) -> datasets.Dataset:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(NUM_IMAGES) % len(CLASSNAMES)
    true_classes = torch.where(CLEAN, labels, (labels + 1) % len(CLASSNAMES))
    columns = {"image_embeds": torch.randn(NUM_IMAGES, dim, generator=generator).tolist(), "labels": labels.tolist()}
    if clean_labels:
        columns[CLEAN_LABELS] = true_classes.tolist()
    return datasets.Dataset.from_dict(columns).with_format("torch")


def _trainer(tiny_clip_dir, output_dir, dataset=None, **overrides) -> CoOpTrainer:
    torch.manual_seed(0)
    model = CoOpModel.from_clip(str(tiny_clip_dir), CLASSNAMES, n_ctx=4)
    dataset = dataset if dataset is not None else _features_dataset(model.clip.config.projection_dim)
    settings = dict(
        num_train_epochs=3, per_device_train_batch_size=NUM_IMAGES, learning_rate=0.5, warmup_epochs=0,
        disable_tqdm=True, report_to=[], seed=0, gradient_flow=True,
    ) | overrides  # fmt: skip
    args = CoOpTrainingArguments(output_dir=str(output_dir), **settings)
    return CoOpTrainer(model=model, args=args, train_dataset=dataset)


def test_trainer_records_clean_and_noisy_gradient_norms_of_every_step(tiny_clip_dir, tmp_path):
    trainer = _trainer(tiny_clip_dir, tmp_path / "flow", logging_steps=1)
    initial = copy.deepcopy(trainer.model)
    trainer.train()

    # Step 1 sees the whole split with the initial context: its record is the per-sample norms of that model.
    batch = trainer.train_dataset[:]
    inputs = {"image_embeds": batch["image_embeds"], "labels": batch["labels"]}
    norms = per_sample_gradient_norms(lambda sample: initial(**sample).loss, [initial.prompt_learner.ctx], inputs)
    clean = batch[CLEAN_LABELS] == batch["labels"]
    records = step_records(trainer.state.log_history)
    assert [record["step"] for record in records] == [1, 2, 3]
    assert (records[0]["clean_samples"], records[0]["noisy_samples"]) == (5, 3)
    assert records[0]["clean"] == pytest.approx(norms[clean].mean().item(), rel=1e-5)
    assert records[0]["noisy"] == pytest.approx(norms[~clean].mean().item(), rel=1e-5)
    assert records[1]["clean"] != pytest.approx(records[0]["clean"])  # the context moved between the steps

    saved = json.loads((tmp_path / "flow" / GRADIENT_FLOW_FILE).read_text())
    assert saved["steps"] == records
    assert saved["summary"]["clean"] == pytest.approx(np.mean([record["clean"] for record in records]))
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged[0]["grad_norm_clean"] == pytest.approx(records[0]["clean"])  # the training logs carry it too


def test_recording_leaves_training_unchanged(tiny_clip_dir, tmp_path):
    traced = _trainer(tiny_clip_dir, tmp_path / "traced")
    traced.train()
    plain = _trainer(tiny_clip_dir, tmp_path / "plain", gradient_flow=False)  # clean_labels in the batch, unused
    plain.train()
    torch.testing.assert_close(traced.model.prompt_learner.ctx, plain.model.prompt_learner.ctx, rtol=0, atol=0)
    assert not (tmp_path / "plain" / GRADIENT_FLOW_FILE).exists()
    assert not any(CLEAN_SAMPLES in entry for entry in plain.state.log_history)
    assert plain.evaluate(eval_dataset=plain.train_dataset)["eval_loss"] > 0  # a noisy split evaluates too


def test_records_survive_a_resume_from_checkpoint(tiny_clip_dir, tmp_path):
    whole = _trainer(tiny_clip_dir, tmp_path / "whole")
    whole.train()
    resumed = _trainer(tiny_clip_dir, tmp_path / "whole")
    resumed.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-2"))
    expected, got = step_records(whole.state.log_history), step_records(resumed.state.log_history)
    assert [record["step"] for record in got] == [1, 2, 3]
    assert [record["clean"] for record in got] == pytest.approx([record["clean"] for record in expected], rel=1e-5)


def test_gradient_flow_without_clean_labels_names_the_flag(tiny_clip_dir, tmp_path):
    trainer = _trainer(tiny_clip_dir, tmp_path, dataset=_features_dataset(32, clean_labels=False))
    with pytest.raises(ValueError, match="--noise_rate above 0"):
        trainer.train()
    assert trainer.state.global_step == 0  # refused before the first step
    flags = ["--model_name_or_path", "unused", "--output_dir", str(tmp_path), "--gradient_flow", "true"]
    parser = HfArgumentParser((ExperimentArguments, PromptArguments, CoOpTrainingArguments))
    for extra in ([], ["--noise_type", "replace", "--noise_rate", "0.5", "--method", "linear-probe"]):
        with pytest.raises(ValueError, match="--gradient_flow compares"):  # before any model or data is loaded
            run_method(*parser.parse_args_into_dataclasses(args=flags + extra))


def test_image_transform_carries_the_clean_labels(tiny_clip_dir, tmp_path):
    from PIL import Image

    paths = []
    for index in range(3):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.new("RGB", (40, 30), (index * 80, 10, 10)).save(paths[-1])
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=CLASSNAMES),
            "clean_label": datasets.ClassLabel(names=CLASSNAMES),
        }
    )
    noisy = datasets.Dataset.from_dict({"image": paths, "label": [0, 1, 2], "clean_label": [0, 2, 2]}, features)
    processor = AutoImageProcessor.from_pretrained(tiny_clip_dir)
    batch = with_coop_transform(noisy, processor, train=True)[:]
    assert batch[CLEAN_LABELS].tolist() == [0, 2, 2] and batch["labels"].tolist() == [0, 1, 2]
    clean_only = with_coop_transform(noisy.remove_columns("clean_label"), processor, train=False)[:]
    assert set(clean_only) == {"pixel_values", "labels"}
    assert CLEAN_LABELS not in CoOpTransform(processor, train=False)({"image": paths[:1], "label": [0]})
