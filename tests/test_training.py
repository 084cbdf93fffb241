"""The CoOp recipe on Trainer: optimizer, schedule, epochs, checkpoints and input checks."""

import math
import os

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor

from coop_hf import CoOpModel
from coop_hf.data import with_coop_transform
from coop_hf.training import CoOpTrainer, CoOpTrainingArguments, reference_epochs, warmup_cosine_factor
from tests.conftest import random_image_dataset

CLASSNAMES = ["cat", "dog", "sunflower"]


@pytest.fixture()
def image_dataset(tmp_path) -> datasets.Dataset:
    return random_image_dataset(tmp_path, CLASSNAMES)


def make_trainer(tiny_clip_dir, dataset, output_dir, **overrides) -> CoOpTrainer:
    processor = AutoImageProcessor.from_pretrained(tiny_clip_dir)
    model = CoOpModel.from_clip(str(tiny_clip_dir), CLASSNAMES, n_ctx=4)
    settings = dict(num_train_epochs=3, per_device_train_batch_size=4, disable_tqdm=True) | overrides
    args = CoOpTrainingArguments(output_dir=str(output_dir), **settings)
    train = with_coop_transform(dataset, processor, train=True)
    return CoOpTrainer(model=model, args=args, train_dataset=train, processing_class=processor)


def test_defaults_are_the_coop_recipe():
    args = CoOpTrainingArguments(output_dir="unused")
    assert (args.learning_rate, args.momentum, args.weight_decay) == (0.002, 0.9, 5e-4)
    assert args.per_device_train_batch_size == 32 and (args.warmup_epochs, args.warmup_lr) == (1, 1e-5)
    assert args.num_train_epochs is None and not args.remove_unused_columns


@pytest.mark.parametrize(("shots", "epochs"), [(1, 50), (2, 100), (4, 100), (8, 200), (16, 200)])
def test_reference_epochs_by_shots(shots, epochs):
    assert reference_epochs(shots, "oxford_flowers") == epochs
    assert reference_epochs(shots, "imagenet") == 50


def test_schedule_is_constant_warmup_then_cosine_by_epoch():
    factors = [warmup_cosine_factor(e, total_epochs=4, warmup_epochs=1, warmup_ratio=0.005) for e in range(4)]
    assert factors == pytest.approx([0.005, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5])


def test_optimizer_is_sgd_on_the_context_only_and_lr_follows_the_schedule(tiny_clip_dir, image_dataset, tmp_path):
    trainer = make_trainer(tiny_clip_dir, image_dataset, tmp_path, logging_strategy="steps", logging_steps=1)
    trainer.train()
    optimizer = trainer.optimizer
    assert isinstance(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer, torch.optim.SGD)
    (group,) = optimizer.param_groups
    assert group["momentum"] == 0.9 and group["weight_decay"] == 5e-4
    assert [param.shape for param in group["params"]] == [trainer.model.prompt_learner.ctx.shape]
    rates = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    assert rates[:3] == pytest.approx([1e-5] * 3) and rates[3] == pytest.approx(0.002)  # warm-up epoch, then full lr
    # 12 images, batch 4: 3 steps per epoch; the scheduler steps once per epoch boundary in the reference.
    lambdas = [trainer.lr_scheduler.lr_lambdas[0](step) for step in range(9)]
    assert lambdas[:3] == [1e-5 / 0.002] * 3 and lambdas[3:6] == [1.0] * 3


def test_checkpoints_hold_the_prompt_not_clip(tiny_clip_dir, image_dataset, tmp_path):
    trainer = make_trainer(tiny_clip_dir, image_dataset, tmp_path)
    trainer.train()
    checkpoint = tmp_path / "checkpoint-9"
    assert list(load_file(checkpoint / "model.safetensors")) == ["prompt_learner.ctx"]
    assert os.path.getsize(checkpoint / "model.safetensors") < 4096
    assert os.path.getsize(checkpoint / "optimizer.pt") < 16384
    assert (checkpoint / "README.md").read_text().startswith("---\n")


def test_dataset_with_another_class_list_is_refused_before_training(tiny_clip_dir, image_dataset, tmp_path):
    other = image_dataset.cast_column("label", datasets.ClassLabel(names=["cat", "dog", "rose"]))
    trainer = make_trainer(tiny_clip_dir, other, tmp_path)
    with pytest.raises(ValueError, match="differ first at label 2: the dataset has 'rose', the model 'sunflower'"):
        trainer.train()
    assert not list(tmp_path.glob("checkpoint-*"))


def test_bf16_autocast_keeps_fp32_master_context_and_finite_loss(tiny_clip_dir, image_dataset, tmp_path):
    trainer = make_trainer(tiny_clip_dir, image_dataset, tmp_path, bf16=True, use_cpu=True, num_train_epochs=2)
    output = trainer.train()
    assert math.isfinite(output.training_loss)
    assert trainer.model.prompt_learner.ctx.dtype == torch.float32
    assert torch.isfinite(trainer.model.prompt_learner.ctx).all()


def test_no_gradient_clipping_by_default_as_the_reference(tiny_clip_dir, image_dataset, tmp_path, monkeypatch):
    assert CoOpTrainingArguments(output_dir="unused").max_grad_norm == 0
    clipped = []
    monkeypatch.setattr(CoOpTrainer, "_clip_grad_norm", lambda self, model: clipped.append(1) or torch.tensor(0.0))
    make_trainer(tiny_clip_dir, image_dataset, tmp_path / "default", num_train_epochs=1).train()
    assert clipped == []
    make_trainer(tiny_clip_dir, image_dataset, tmp_path / "clip", num_train_epochs=1, max_grad_norm=1.0).train()
    assert len(clipped) == 3  # --max_grad_norm still clips every step


@pytest.mark.parametrize(
    ("batch_size", "keep_last_batch", "steps_per_epoch"),
    [(5, False, 2), (5, True, 3), (4, False, 3), (16, False, 1)],  # 12 images; a split smaller than a batch keeps it
)
def test_last_incomplete_batch_is_dropped_as_dassl_does(
    tiny_clip_dir, image_dataset, tmp_path, batch_size, keep_last_batch, steps_per_epoch
):
    trainer = make_trainer(
        tiny_clip_dir, image_dataset, tmp_path, per_device_train_batch_size=batch_size, keep_last_batch=keep_last_batch
    )
    assert len(trainer.get_train_dataloader()) == steps_per_epoch
    assert not trainer.args.dataloader_drop_last  # evaluation never drops images
    assert len(trainer.get_eval_dataloader(image_dataset)) == math.ceil(12 / trainer.args.per_device_eval_batch_size)


def test_reference_batches_for_one_shot_flowers():
    args = CoOpTrainingArguments(output_dir="unused")
    assert args.drops_last_batch(102) and not args.drops_last_batch(31)  # 1 shot x 102 classes: 3 steps, not 4
    assert not CoOpTrainingArguments(output_dir="unused", keep_last_batch=True).drops_last_batch(102)


def test_no_pin_memory_on_cpu():
    assert CoOpTrainingArguments(output_dir="unused", use_cpu=True).dataloader_pin_memory is False
