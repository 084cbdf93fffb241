"""The gradient-flow analysis: per-sample gradient norms of clean and noisy samples, recorded by the Trainer."""

import copy
import json

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoImageProcessor, HfArgumentParser

from coop_hf import CoOpModel, KgCoOpModel
from coop_hf.data import CLEAN_LABELS, with_coop_transform
from coop_hf.gradient_flow import CLEAN_SAMPLES, GRADIENT_FLOW_FILE, per_sample_gradient_norms, pool, step_records
from coop_hf.losses import GeneralizedCrossEntropy
from coop_hf.noise import NoiseSpec
from coop_hf.runners import ExperimentArguments, PromptArguments
from coop_hf.runners.run import run_method
from coop_hf.training import CoOpTrainer, CoOpTrainingArguments
from tests.test_training import CLASSNAMES
from tests.tolerances import assert_close_fp32, fp32_tolerance, stages

NUM_IMAGES = 8
CLEAN = torch.tensor([True, True, False, True, False, True, True, False])


def test_per_sample_norms_match_the_closed_form_of_softmax_regression():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(5, 7))
    bias = torch.nn.Parameter(torch.randn(5))
    x, labels = torch.randn(6, 7), torch.randint(0, 5, (6,))
    logits = x @ weight.T + bias  # one forward pass for the whole batch
    losses = [F.cross_entropy(logits[i : i + 1], labels[i : i + 1]) for i in range(6)]

    norms = per_sample_gradient_norms(losses, [weight, bias])
    # d CE / d logits = p - onehot(y); the weight's gradient is its outer product with x, the bias's is itself.
    residual = torch.softmax(logits, -1) - F.one_hot(labels, 5)
    expected = residual.norm(dim=1) * (x.square().sum(1) + 1).sqrt()
    assert_close_fp32(norms, expected.detach(), depth=stages(0, backward=True))
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


def _trainer(tiny_clip_dir, output_dir, dataset=None, model=None, loss=None, **overrides) -> CoOpTrainer:
    torch.manual_seed(0)
    model = model if model is not None else CoOpModel.from_clip(str(tiny_clip_dir), CLASSNAMES, n_ctx=4)
    dataset = dataset if dataset is not None else _features_dataset(model.clip.config.projection_dim)
    settings = dict(
        num_train_epochs=3, per_device_train_batch_size=NUM_IMAGES, learning_rate=0.5, warmup_epochs=0,
        disable_tqdm=True, report_to=[], seed=0, gradient_flow=True,
    ) | overrides  # fmt: skip
    args = CoOpTrainingArguments(output_dir=str(output_dir), **settings)
    return CoOpTrainer(model=model, args=args, train_dataset=dataset, compute_loss_func=loss)


def _kgcoop(tiny_clip_dir):
    torch.manual_seed(0)
    return KgCoOpModel.from_clip(str(tiny_clip_dir), CLASSNAMES, template="a photo of a {}.", kg_weight=8.0)


@pytest.mark.parametrize(
    ("build", "loss", "data_loss"),
    [
        (None, None, F.cross_entropy),
        (None, GeneralizedCrossEntropy(0.5), GeneralizedCrossEntropy(0.5)),
        # KgCoOp trains on CE + 8 x its regulariser; the flow is the CE's alone (the regulariser is the same for all).
        (_kgcoop, None, F.cross_entropy),
    ],
    ids=["coop-ce", "coop-gce", "kgcoop"],
)
def test_trainer_records_clean_and_noisy_gradient_norms_of_every_step(tiny_clip_dir, tmp_path, build, loss, data_loss):
    model = build(tiny_clip_dir) if build else None
    trainer = _trainer(tiny_clip_dir, tmp_path / "flow", model=model, loss=loss, logging_steps=1)
    initial = copy.deepcopy(trainer.model)
    trainer.train()

    # Step 1 sees the whole split with the initial prompt: its record is the per-sample norms of that model.
    batch = trainer.train_dataset[:]
    logits = initial(image_embeds=batch["image_embeds"]).logits
    losses = [data_loss(logits[i : i + 1], batch["labels"][i : i + 1]) for i in range(NUM_IMAGES)]
    norms = per_sample_gradient_norms(losses, [p for p in initial.parameters() if p.requires_grad])
    clean = batch[CLEAN_LABELS] == batch["labels"]
    records = step_records(trainer.state.log_history)
    assert [record["step"] for record in records] == [1, 2, 3]
    assert (records[0]["clean_samples"], records[0]["noisy_samples"]) == (5, 3)
    rel = fp32_tolerance(stages(2, backward=True))  # norms of gradients through the two-layer text tower
    assert records[0]["clean"] == pytest.approx(norms[clean].mean().item(), rel=rel)
    assert records[0]["noisy"] == pytest.approx(norms[~clean].mean().item(), rel=rel)
    assert records[1]["clean"] != pytest.approx(records[0]["clean"])  # the prompt moved between the steps

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


def test_image_transform_carries_the_clean_labels_on_request(tiny_clip_dir, tmp_path):
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
    batch = with_coop_transform(noisy, processor, train=True, clean_labels=True)[:]
    assert batch[CLEAN_LABELS].tolist() == [0, 2, 2] and batch["labels"].tolist() == [0, 1, 2]
    assert set(with_coop_transform(noisy, processor, train=False)[:]) == {"pixel_values", "labels"}  # model(**batch)
    with pytest.raises(ValueError, match="--noise_rate above 0"):
        with_coop_transform(noisy.remove_columns("clean_label"), processor, train=True, clean_labels=True)


def test_report_marks_a_split_without_noisy_samples(tmp_path):
    from tests.conftest import load_example

    def run(label, clean, noisy):
        seed_dir = tmp_path / label
        seed_dir.mkdir()
        steps = [{"step": 1, "epoch": 0, "clean": clean, "noisy": noisy, "clean_samples": 2, "noisy_samples": 0}]
        (seed_dir / GRADIENT_FLOW_FILE).write_text(json.dumps({"steps": steps}))
        seed = {"prompt_dir": str(seed_dir), "gradient_flow": {"clean": clean, "noisy": noisy}}
        return {"study_method": label, "noise_rate_requested": 0.125, "per_seed": [seed]}

    runs = [run("CoOp (CE)", 2.0, None), run("CoOp (GCE)", 1.0, 3.0)]
    table = load_example("train_noisy").gradient_flow_report(runs, NoiseSpec("replace", 0.125), tmp_path, "t")
    assert "| CoOp (CE) | 2 | – | – |" in table and "| CoOp (GCE) | 1 | 3 | 3.00 |" in table
    assert (tmp_path / "gradient_flow.png").stat().st_size > 0
