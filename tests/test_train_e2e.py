"""The few-shot protocol end to end on the real mini Flowers102 with a tiny random CLIP."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import HfArgumentParser, TrainerCallback

from coop_hf import CoOpModel
from coop_hf.data import UnreadableImageError, load_benchmark
from coop_hf.run_directory import RunConfigMismatchError
from coop_hf.runners import ExperimentArguments, LoadedBackbone, PromptArguments, run_method
from coop_hf.training import CoOpTrainingArguments
from tests.conftest import DATA, REPO, flowers_split, flowers_with_garbage
from tests.tolerances import assert_close_fp32


def flags(tiny_clip_dir, output_dir, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(tiny_clip_dir), "--dataset", "oxford_flowers", "--data_dir", str(DATA),
        "--shots", "1", "--n_ctx", "4", "--num_train_epochs", "2", "--output_dir", str(output_dir),
        "--disable_tqdm", "true", "--learning_rate", "0.05", *extra,
    ]  # fmt: skip


def run_in_process(arguments: list[str], callbacks=None) -> dict:
    parser = HfArgumentParser((ExperimentArguments, PromptArguments, CoOpTrainingArguments))
    return run_method(*parser.parse_args_into_dataclasses(args=arguments), callbacks=callbacks)


def launch_on_two_processes(arguments: list[str]) -> subprocess.CompletedProcess:
    # Several CPU processes go through accelerate's torchrun launcher (--multi_gpu) with Trainer on the CPU
    # (--use_cpu true), gloo backend.
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [*launcher, str(REPO / "examples" / "train.py"), *arguments], env=env, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    return completed


@pytest.mark.slow
def test_accelerate_launch_of_two_processes_trains_as_one_process(tiny_clip_dir, tmp_path):
    """`accelerate launch` runs the script on two CPU processes with the protocol of one process (run in-process
    here) and the same prompts: every training view is seeded by (seed, epoch, image), so the two processes draw
    the views one process draws."""
    one, two = tmp_path / "one", tmp_path / "two"
    run_in_process(flags(tiny_clip_dir, one, "--seeds", "1", "2", "--use_cpu", "true"))
    two_flags = flags(tiny_clip_dir, two, "--seeds", "1", "--per_device_train_batch_size", "16")
    two_flags += ["--use_cpu", "true"]
    launch_on_two_processes(two_flags)
    results_one = json.loads((one / "results.json").read_text())
    results_two = json.loads((two / "results.json").read_text())
    assert results_one["method"] == "coop" and results_one["dataset"] == "oxford_flowers" and results_one["shots"] == 1
    assert results_one["seeds"] == [1, 2] and [run["seed"] for run in results_one["per_seed"]] == [1, 2]
    accuracies = [run["accuracy"] for run in results_one["per_seed"]]
    assert results_one["accuracy"] == pytest.approx(sum(accuracies) / 2)
    assert results_one["accuracy_std"] == pytest.approx(abs(accuracies[0] - accuracies[1]) / 2)
    # Same test split, same zero-shot baseline, same global batch (32) of the same views: the same prompts, but for
    # the order in which the all-reduce adds the two halves' gradients (float rounding).
    assert results_two["zeroshot_accuracy"] == results_one["zeroshot_accuracy"]
    assert results_two["epochs"] == results_one["epochs"] == 2
    state_one = json.loads((one / "seed1" / "trainer_state.json").read_text())
    state_two = json.loads((two / "seed1" / "trainer_state.json").read_text())
    assert state_one["global_step"] == state_two["global_step"]
    ctx_one, ctx_two = (CoOpModel.from_pretrained(run / "seed1").prompt_learner.ctx for run in (one, two))
    # The runs differ only in the order each step's gradient halves are added: one float32 stage per step
    # (measured: 1.9e-6 at values ~5).
    assert_close_fp32(ctx_two, ctx_one, depth=state_one["global_step"])
    assert results_two["per_seed"][0]["accuracy"] == results_one["per_seed"][0]["accuracy"]


@pytest.mark.slow
def test_one_shot_run_writes_results_prompt_and_card_and_reloads_exactly(tiny_clip_dir, tmp_path):
    results = run_in_process(flags(tiny_clip_dir, tmp_path))
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    prompt_dir = tmp_path / "seed1"
    card = (prompt_dir / "README.md").read_text()
    assert "datasets:\n- oxford_flowers" in card and "model-index" in card and "Zero-shot CLIP" in card
    assert (prompt_dir / "trainer_state.json").is_file()
    assert os.path.getsize(prompt_dir / "model.safetensors") < 4096

    # The saved prompt reproduces the logged test accuracy exactly.
    backbone = LoadedBackbone.load(str(tiny_clip_dir))
    test = backbone.features(load_benchmark("oxford_flowers", DATA)["test"], batch_size=100)
    model = CoOpModel.from_pretrained(prompt_dir)
    with torch.no_grad():
        predictions = model(image_embeds=test["image_embeds"]).logits.argmax(-1)
    accuracy = 100.0 * int((predictions == test["labels"]).sum()) / len(predictions)
    assert accuracy == pytest.approx(results["per_seed"][0]["accuracy"], abs=1e-9)


@pytest.mark.slow
def test_training_from_cached_augmented_views(tiny_clip_dir, tmp_path):
    cache = tmp_path / "features"
    arguments = flags(tiny_clip_dir, tmp_path / "run", "--cached_views", "3", "--feature_cache_dir", str(cache))
    results = run_in_process(arguments)
    assert results["cached_views"] == 3 and results["epochs"] == 2
    state = json.loads((tmp_path / "run" / "seed1" / "trainer_state.json").read_text())
    # 3 views x 102 images = 306 features: 9 full batches of 32 an epoch (the last, incomplete one is dropped).
    assert state["global_step"] == 2 * 9
    assert len([entry for entry in cache.iterdir() if entry.is_dir()]) == 2  # test features, seed 1 train views
    assert CoOpModel.from_pretrained(tmp_path / "run" / "seed1").config.classnames[0] == "pink primrose"


class KillAfterFirstCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt("killed")


@pytest.mark.slow
def test_resumed_run_ends_identical_to_an_uninterrupted_one(tiny_clip_dir, tmp_path, capsys):
    uninterrupted = run_in_process(flags(tiny_clip_dir, tmp_path / "full"))
    assert "oxford_flowers | 1 shot | seed 1 (1/1): training 2 epochs" in capsys.readouterr().out
    with pytest.raises(KeyboardInterrupt):
        run_in_process(flags(tiny_clip_dir, tmp_path / "killed"), callbacks=[KillAfterFirstCheckpoint()])
    assert [p.name for p in (tmp_path / "killed" / "seed1").glob("checkpoint-*")] == ["checkpoint-3"]
    resumed = run_in_process(flags(tiny_clip_dir, tmp_path / "killed", "--resume_from_checkpoint", "true"))
    assert "seed 1 (1/1): resuming from" in capsys.readouterr().out
    assert resumed["accuracy"] == uninterrupted["accuracy"]
    run_in_process(flags(tiny_clip_dir, tmp_path / "killed", "--resume_from_checkpoint", "true"))
    assert "seed 1 (1/1): already done" in capsys.readouterr().out
    ctx = [CoOpModel.from_pretrained(tmp_path / run / "seed1").prompt_learner.ctx for run in ("full", "killed")]
    torch.testing.assert_close(ctx[0], ctx[1], rtol=0, atol=0)


@pytest.mark.slow
def test_baselines_on_the_same_splits(tiny_clip_dir, tmp_path):
    zeroshot = run_in_process(flags(tiny_clip_dir, tmp_path / "zs", "--method", "zeroshot", "--seeds", "1", "2"))
    assert zeroshot["accuracy_std"] == 0 and len(zeroshot["per_seed"]) == 2
    assert zeroshot["accuracy"] == zeroshot["zeroshot_accuracy"] and "accuracy_ensemble" in zeroshot
    assert zeroshot["templates_ensemble"][-1] == "a photo of a {}, a type of flower."
    noisy = ["--noise_type", "symmetric", "--noise_rate", "0.5"]
    probe = run_in_process(flags(tiny_clip_dir, tmp_path / "lp", "--method", "linear-probe", "--shots", "2", *noisy))
    assert probe["method"] == "linear-probe" and 0 <= probe["accuracy"] <= 100 and probe["per_seed"][0]["C"] > 0
    assert probe["noise_type"] == "symmetric" and probe["noise_rate_requested"] == 0.5
    assert probe["noise_rate_actual"] == 0.5  # 1 of the 2 shots of every class relabelled
    assert json.loads((tmp_path / "lp" / "results.json").read_text())["shots"] == 2


@pytest.mark.slow
def test_class_specific_context_learns_far_above_chance_on_real_images(tiny_clip_dir):
    """Learning flows through the frozen encoders: CSC fits 10 real Flowers classes (chance: 10 %)."""
    backbone = LoadedBackbone.load(str(tiny_clip_dir))
    splits = load_benchmark("oxford_flowers", DATA)
    train = splits["train"].filter(lambda label: label < 10, input_columns="label")
    classnames = splits["train"].features["label"].names[:10]
    model = CoOpModel.from_clip(
        backbone.clip, classnames, tokenizer=backbone.tokenizer, n_ctx=4, class_specific_context=True
    )
    features = backbone.features(train, batch_size=100)
    optimizer = torch.optim.Adam([model.prompt_learner.ctx], lr=0.05)
    for _ in range(300):
        loss = model(image_embeds=features["image_embeds"], labels=features["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (
            (model(image_embeds=features["image_embeds"]).logits.argmax(-1) == features["labels"]).float().mean()
        )
    assert accuracy > 0.3, accuracy  # 3x chance


@pytest.mark.slow
def test_rerun_with_another_configuration_stops_before_any_work(tiny_clip_dir, tmp_path, monkeypatch):
    run_in_process(flags(tiny_clip_dir, tmp_path))
    encoded = []
    features = LoadedBackbone.features
    monkeypatch.setattr(
        LoadedBackbone, "features", lambda *args, **kwargs: encoded.append(1) or features(*args, **kwargs)
    )
    for extra in (["--shots", "2"], ["--shots", "2", "--resume_from_checkpoint", "true"]):
        with pytest.raises(RunConfigMismatchError, match=r"shots: 1 \(in the directory\) -> 2 \(now\)"):
            run_in_process(flags(tiny_clip_dir, tmp_path, *extra))
    assert encoded == []
    assert json.loads((tmp_path / "results.json").read_text())["shots"] == 1
    results = run_in_process(flags(tiny_clip_dir, tmp_path, "--shots", "2", "--overwrite_output_dir", "true"))
    assert results["shots"] == 2 and json.loads((tmp_path / "results.json").read_text())["shots"] == 2
    state = json.loads((tmp_path / "seed1" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 * 6  # 204 images in batches of 32: 6 steps an epoch
    assert sorted(path.name for path in (tmp_path / "seed1").glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]


def test_results_record_the_models_prompt_settings(tiny_clip_dir, tmp_path):
    arguments = [flag for flag in flags(tiny_clip_dir, tmp_path) if flag not in ("--n_ctx", "4")]
    results = run_in_process([*arguments, "--ctx_init", "a photo of a", "--max_steps", "1"])
    assert results["n_ctx"] == 4 and results["ctx_init"] == "a photo of a"
    recorded = json.loads((tmp_path / "run_config.json").read_text())
    assert recorded["prompt"]["n_ctx"] == 4 and recorded["dataset"]["name"] == "oxford_flowers"
    with pytest.raises(ValueError, match=r"n_ctx=8 \(--n_ctx\) contradicts ctx_init='a photo of a' \(--ctx_init\)"):
        run_in_process([*arguments, "--ctx_init", "a photo of a", "--n_ctx", "8", "--output_dir", str(tmp_path / "b")])


@pytest.mark.slow
def test_a_prompt_trained_from_relative_paths_loads_from_any_directory(tiny_clip_dir, tmp_path, monkeypatch):
    """config.json records a local backbone as an absolute path and seed_result.json an absolute prompt_dir, so the
    saved prompt loads from another working directory with nothing passed."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(work)
    relative_clip = os.path.relpath(tiny_clip_dir, work)
    run_in_process(flags(relative_clip, "out", "--num_train_epochs", "1"))
    monkeypatch.chdir(elsewhere)
    config = json.loads((work / "out" / "seed1" / "config.json").read_text())
    assert config["base_model_name_or_path"] == os.path.abspath(tiny_clip_dir)
    seed_result = json.loads((work / "out" / "seed1" / "seed_result.json").read_text())
    assert seed_result["prompt_dir"] == str(work / "out" / "seed1")
    model = CoOpModel.from_pretrained(seed_result["prompt_dir"])
    assert model.config.base_model_name_or_path == os.path.abspath(tiny_clip_dir)


def test_shot_counts_read_as_words():
    from coop_hf.runners.records import shots_text

    assert (shots_text(1), shots_text(16)) == ("1 shot", "16 shots")


@pytest.mark.parametrize("method", ["coop", "linear-probe"])
def test_a_shot_count_below_one_fails_before_anything_is_written(tiny_clip_dir, tmp_path, capsys, method):
    with pytest.raises(ValueError, match=r"--shots takes the number of training images per class, at least 1; got -2"):
        run_in_process(flags(tiny_clip_dir, tmp_path / "out", "--shots", "-2", "--method", method))
    assert not (tmp_path / "out").exists() and "training" not in capsys.readouterr().out


def flowers_with_unreadable_class(folder):
    """The shared Flowers102 as symlinks, with every train image of the first class replaced by garbage."""
    return flowers_with_garbage(folder, {path for path, label, _ in flowers_split()["train"] if label == 0})


@pytest.mark.parametrize("method", ["coop", "linear-probe"])
@pytest.mark.slow
def test_a_failed_shot_draw_or_image_check_leaves_the_directory_unclaimed(tiny_clip_dir, tmp_path, method):
    """--shots above a class's images, or an unreadable image among the shots, fails before run_config.json is
    written: the corrected rerun into the same directory is not refused as another configuration."""
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="--allow_fewer_shots"):
        run_in_process(flags(tiny_clip_dir, out, "--shots", "25", "--method", method))
    assert not (out / "run_config.json").exists()
    data = flowers_with_unreadable_class(tmp_path / "data")
    with pytest.raises(UnreadableImageError):
        run_in_process([*flags(tiny_clip_dir, out, "--method", method), "--data_dir", str(data)])
    assert not (out / "run_config.json").exists()
    assert 0 <= run_in_process(flags(tiny_clip_dir, out, "--method", method))["accuracy"] <= 100


@pytest.mark.slow
def test_a_run_that_never_leaves_the_warm_up_says_so(tiny_clip_dir, tmp_path, capsys):
    run_in_process(flags(tiny_clip_dir, tmp_path / "one", "--num_train_epochs", "1"))
    assert "warning: 1 epoch(s) never leave the constant warm-up learning rate 1e-05" in capsys.readouterr().out
    run_in_process(flags(tiny_clip_dir, tmp_path / "two", "--num_train_epochs", "2"))
    assert "warm-up" not in capsys.readouterr().out


RESULT_CHANGING_OPTIONS = [
    (["--weight_decay", "0.001"], "weight_decay"),
    (["--noise_rate", "0.5"], "noise_rate"),
    (["--learning_rate", "0.01"], "learning_rate"),
    (["--momentum", "0.5"], "momentum"),
    (["--warmup_epochs", "0"], "warmup_epochs"),
    (["--per_device_train_batch_size", "16"], "batch_size"),
    (["--n_ctx", "8"], "n_ctx"),
    (["--loss", "gce"], "loss"),
    (["--noise_type", "symmetric"], "noise_type"),
    (["--seeds", "1", "--allow_fewer_shots", "true"], "allow_fewer_shots"),
]


@pytest.mark.slow
def test_every_result_changing_option_guards_the_run_directory(tiny_clip_dir, tmp_path):
    """Changing any one option that changes the results, alone, makes a rerun into the same directory refuse, naming
    the option, before any work."""
    base = ["--noise_type", "replace", "--noise_rate", "0.25", "--num_train_epochs", "1"]
    run_in_process(flags(tiny_clip_dir, tmp_path, *base))
    for extra, field_name in RESULT_CHANGING_OPTIONS:
        with pytest.raises(RunConfigMismatchError, match=field_name):
            run_in_process(flags(tiny_clip_dir, tmp_path, *base, *extra))
