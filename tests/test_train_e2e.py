"""The few-shot protocol end to end on the real mini Flowers102 with a tiny random CLIP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from coop_hf import CoOpModel
from coop_hf.data import load_benchmark
from coop_hf.experiments import Backbone, Task, run_coop_seed
from coop_hf.training import CoOpTrainingArguments
from tests.conftest import DATA

REPO = Path(__file__).resolve().parents[1]


def run_script(*args: str, processes: int = 1, cwd: Path = REPO) -> None:
    launcher = (
        [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(processes)]
        if processes > 1
        else [sys.executable]
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [*launcher, str(REPO / "examples" / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]


def common_flags(tiny_clip_dir, output_dir, cache_dir) -> list[str]:
    return [
        "--model_name_or_path", str(tiny_clip_dir), "--dataset", "oxford_flowers", "--data_dir", str(DATA),
        "--shots", "1", "--n_ctx", "4", "--num_train_epochs", "2", "--output_dir", str(output_dir),
        "--feature_cache_dir", str(cache_dir), "--disable_tqdm", "true", "--learning_rate", "0.05",
    ]  # fmt: skip


@pytest.mark.slow
def test_one_shot_run_writes_results_prompt_and_card_and_reloads_exactly(tiny_clip_dir, tmp_path):
    output_dir, cache_dir = tmp_path / "run", tmp_path / "cache"
    run_script(*common_flags(tiny_clip_dir, output_dir, cache_dir), "--seeds", "1", "2")
    results = json.loads((output_dir / "results.json").read_text())
    assert results["method"] == "coop" and results["dataset"] == "oxford_flowers" and results["shots"] == 1
    assert results["seeds"] == [1, 2] and [run["seed"] for run in results["per_seed"]] == [1, 2]
    accuracies = [run["accuracy"] for run in results["per_seed"]]
    assert results["accuracy"] == pytest.approx(sum(accuracies) / 2)
    assert results["accuracy_std"] == pytest.approx(abs(accuracies[0] - accuracies[1]) / 2)

    prompt_dir = output_dir / "seed1"
    card = (prompt_dir / "README.md").read_text()
    assert "datasets:\n- oxford_flowers" in card and "model-index" in card and "Zero-shot CLIP" in card
    assert (prompt_dir / "trainer_state.json").is_file()

    # The saved prompt reproduces the logged test accuracy exactly.
    backbone = Backbone.load(str(tiny_clip_dir))
    test = backbone.features(
        load_benchmark("oxford_flowers", DATA)["test"], batch_size=100, cache_dir=str(cache_dir)
    )[:]
    model = CoOpModel.from_pretrained(prompt_dir)
    with torch.no_grad():
        predictions = model(image_embeds=test["image_embeds"]).logits.argmax(-1)
    accuracy = 100.0 * int((predictions == test["labels"]).sum()) / len(predictions)
    assert accuracy == pytest.approx(results["per_seed"][0]["accuracy"], abs=1e-9)


class StopAfterFirstEpoch(TrainerCallback):
    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_training_stop = True


def test_resumed_run_ends_identical_to_an_uninterrupted_one(tiny_clip_dir, tmp_path):
    backbone = Backbone.load(str(tiny_clip_dir))
    task = Task.load("oxford_flowers", str(DATA))
    task.splits["train"] = task.splits["train"].select(range(0, 2040, 4))  # 5 images per class
    splits = task.few_shot(1, seed=1)
    test = backbone.features(splits["val"], batch_size=100, cache_dir=str(tmp_path / "cache"))

    def train(output_dir: Path, callbacks=(), resume=None) -> torch.Tensor:
        args = CoOpTrainingArguments(
            output_dir=str(output_dir), num_train_epochs=2, per_device_train_batch_size=16, disable_tqdm=True,
            learning_rate=0.5, save_total_limit=None,
        )  # fmt: skip
        run_coop_seed(
            backbone, task, splits, test, args, seed=1, shots=1, model_kwargs={"n_ctx": 4}, zeroshot_accuracy=0.0,
            resume_from_checkpoint=resume, callbacks=list(callbacks),
        )  # fmt: skip
        return CoOpModel.from_pretrained(output_dir).prompt_learner.ctx.detach()

    uninterrupted = train(tmp_path / "full")
    train(tmp_path / "killed", callbacks=[StopAfterFirstEpoch()])
    assert sorted(p.name for p in (tmp_path / "killed").glob("checkpoint-*")) == ["checkpoint-7"]
    resumed = train(tmp_path / "killed", resume=True)
    torch.testing.assert_close(resumed, uninterrupted, rtol=0, atol=0)


def test_class_specific_context_learns_far_above_chance_on_real_images(tiny_clip_dir, tmp_path):
    """Learning flows through the frozen encoders: CSC fits 10 real Flowers classes (chance: 10 %)."""
    backbone = Backbone.load(str(tiny_clip_dir))
    splits = load_benchmark("oxford_flowers", DATA)
    train = splits["train"].filter(lambda label: label < 10, input_columns="label")
    classnames = splits["train"].features["label"].names[:10]
    model = CoOpModel.from_clip(
        backbone.clip, classnames, tokenizer=backbone.tokenizer, n_ctx=4, class_specific_context=True
    )
    features = backbone.features(train, batch_size=100, cache_dir=str(tmp_path))[:]
    optimizer = torch.optim.Adam([model.prompt_learner.ctx], lr=0.05)
    for _ in range(300):
        loss = model(image_embeds=features["image_embeds"], labels=features["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (
            (model(image_embeds=features["image_embeds"]).logits.argmax(-1) == features["labels"])
            .float()
            .mean()
        )
    assert accuracy > 0.3, accuracy  # 3x chance
