"""An output directory records its configuration; another configuration is refused before any work."""

import copy
import dataclasses
import json
import re
import shutil
from types import SimpleNamespace

import pytest
from datasets import ClassLabel, DatasetDict
from transformers.trainer_pt_utils import AcceleratorConfig

from coop_hf.data import load_benchmark
from coop_hf.run_directory import (
    RUN_CONFIG_NAME,
    RunConfigMismatchError,
    claim_run_directory,
    config_differences,
    splits_fingerprint,
)
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.runners.records import training_fields
from coop_hf.training import CoOpTrainingArguments
from tests.conftest import DATA

CONFIG = {"method": "coop", "shots": 2, "prompt": {"n_ctx": 4, "ctx_init": None}, "dataset": {"name": "dtd"}}


def test_a_new_directory_records_its_configuration(tmp_path):
    assert claim_run_directory(tmp_path / "run", CONFIG) is False
    assert json.loads((tmp_path / "run" / RUN_CONFIG_NAME).read_text()) == CONFIG
    assert claim_run_directory(tmp_path / "run", json.loads(json.dumps(CONFIG))) is True  # same run: continue


def test_another_configuration_is_refused_with_the_differing_fields(tmp_path):
    claim_run_directory(tmp_path, CONFIG)
    (tmp_path / "results.json").write_text("{}")
    other = {**CONFIG, "shots": 4, "prompt": {"n_ctx": 16, "ctx_init": None}}
    with pytest.raises(RunConfigMismatchError) as error:
        claim_run_directory(tmp_path, other)
    message = str(error.value)
    assert "shots: 2 (in the directory) -> 4 (now)" in message and "prompt.n_ctx: 4" in message
    assert "--output_dir" in message and "--overwrite_output_dir" in message
    assert json.loads((tmp_path / RUN_CONFIG_NAME).read_text()) == CONFIG  # nothing was touched


def test_overwrite_removes_the_old_run_but_not_other_files(tmp_path):
    claim_run_directory(tmp_path, CONFIG)
    for folder in ("seed1/checkpoint-3", "checkpoint-9", "ensemble", "notes"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("results.json", "results.md", "seed1/model.safetensors", "notes/mine.txt", "seeds.txt"):
        (tmp_path / name).write_text("x")
    other = {**CONFIG, "shots": 4}
    assert claim_run_directory(tmp_path, other, overwrite=True) is False
    left = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*"))
    assert left == ["notes", "notes/mine.txt", RUN_CONFIG_NAME, "seeds.txt"]
    assert json.loads((tmp_path / RUN_CONFIG_NAME).read_text())["shots"] == 4


def test_results_of_an_unrecorded_run_are_refused(tmp_path):
    (tmp_path / "seed1").mkdir()
    with pytest.raises(RunConfigMismatchError, match="not recorded"):
        claim_run_directory(tmp_path, CONFIG)
    claim_run_directory(tmp_path / "empty", CONFIG)  # a directory without results is simply claimed


def test_config_differences_sees_missing_fields():
    assert config_differences({"a": 1}, {"a": 1, "b": {"c": 2}}) == ["b.c: null (in the directory) -> 2 (now)"]


def test_splits_fingerprint_follows_the_data_not_its_location(tmp_path):
    shutil.copytree(DATA / "oxford_flowers", tmp_path / "oxford_flowers")
    original = load_benchmark("oxford_flowers", DATA)
    moved = load_benchmark("oxford_flowers", tmp_path)
    assert splits_fingerprint(original) == splits_fingerprint(moved)
    fewer = original.copy()
    fewer["test"] = original["test"].select(range(10))
    assert splits_fingerprint(fewer) != splits_fingerprint(original)


def test_splits_fingerprint_follows_the_class_names(tmp_path):
    """Renaming the classes (same images, same label ids) gives another fingerprint: the prompts would be other."""
    original = load_benchmark("caltech101", DATA)
    names = original["train"].features["label"].names
    renamed_label = ClassLabel(names=[f"renamed {name}" for name in names])
    renamed = DatasetDict({name: split.cast_column("label", renamed_label) for name, split in original.items()})
    for name, split in original.items():  # only the names differ
        assert renamed[name]["image_path"] == split["image_path"] and renamed[name]["label"] == split["label"]
    assert splits_fingerprint(renamed) != splits_fingerprint(original)


# Every `CoOpTrainingArguments` field that can change a run's results: (the key of the "training" record that tells
# the runs apart, another value of the field). Each other field must be in NO_RESULT_CHANGE, so a new argument (of
# the package or of transformers) makes its author decide, and a field dropped from the record fails its test.
RESULT_CHANGING = {
    # the CoOp recipe
    "num_train_epochs": ("epochs", 7),
    "max_steps": ("max_steps", 5),
    "learning_rate": ("learning_rate", 0.01),
    "momentum": ("momentum", 0.5),
    "weight_decay": ("weight_decay", 0.0),
    "warmup_epochs": ("warmup_epochs", 0),
    "warmup_lr": ("warmup_lr", 1e-4),
    "per_device_train_batch_size": ("batch_size", 4),
    "gradient_accumulation_steps": ("gradient_accumulation_steps", 2),
    "keep_last_batch": ("keep_last_batch", True),
    "max_grad_norm": ("max_grad_norm", 1.0),
    "cached_views": ("cached_views", 2),
    "fp16": ("precision", True),
    "bf16": ("precision", True),
    "gradient_flow": ("gradient_flow", True),  # what the directory holds (gradient_flow.json)
    # Trainer's options (`records.TRAINER_OPTIONS`)
    "label_smoothing_factor": ("label_smoothing_factor", 0.1),
    "train_sampling_strategy": ("train_sampling_strategy", "sequential"),
    "data_seed": ("data_seed", 3),
    "dataloader_in_order": ("dataloader_in_order", False),
    "accelerator_config": ("accelerator_config", AcceleratorConfig(use_seedable_sampler=False)),
    "ignore_data_skip": ("ignore_data_skip", True),
    "auto_find_batch_size": ("auto_find_batch_size", True),
    "dataloader_drop_last": ("dataloader_drop_last", True),
    "tf32": ("tf32", True),
    "fp16_full_eval": ("fp16_full_eval", True),
    "bf16_full_eval": ("bf16_full_eval", True),
    "load_best_model_at_end": ("load_best_model_at_end", True),
    "metric_for_best_model": ("metric_for_best_model", "accuracy"),
    "greater_is_better": ("greater_is_better", True),
}
NO_RESULT_CHANGE = {
    # where the run is written, what it is called, where it is reported
    "output_dir", "overwrite_output_dir", "run_name", "project", "report_to", "trackio_space_id", "trackio_bucket_id",
    "trackio_static_space_id", "push_to_hub", "hub_token", "hub_private_repo", "hub_model_id", "hub_strategy",
    "hub_always_push", "hub_revision",
    # logs and progress
    "logging_strategy", "logging_steps", "logging_first_step", "log_on_each_node", "logging_nan_inf_filter",
    "include_num_input_tokens_seen", "log_level", "log_level_replica", "disable_tqdm", "skip_memory_metrics", "debug",
    # checkpoints, and whether an interrupted run continues from them (what a resumed run reads: ignore_data_skip)
    "save_strategy", "save_steps", "save_total_limit", "save_only_model", "save_on_each_node", "enable_jit_checkpoint",
    "resume_from_checkpoint", "restore_callback_states_from_checkpoint",
    # validation during training: logs only (the reported model is the last one; load_best_model_at_end is recorded)
    "eval_strategy", "eval_steps", "eval_delay", "eval_on_start",
    # how evaluation is batched and gathered: the same predictions
    "per_device_eval_batch_size", "eval_do_concat_batches", "eval_use_gather_object", "eval_accumulation_steps",
    "include_for_metrics",
    # loud failures on the prompt models, never a quiet change: evaluation then reports no accuracy, the metric takes
    # no compute_result, the models have no input embeddings for NEFTune, the images are removed before the
    # transform, the labels are not found
    "prediction_loss_only", "batch_eval_metrics", "neftune_noise_alpha", "remove_unused_columns", "label_names",
    # read by the length-grouped samplers only (train_sampling_strategy), from a column the datasets do not have
    "length_column_name",
    # replaced by CoOpTrainer's SGD and warm-up + cosine schedule (and by each method trainer's own)
    "optim", "optim_args", "optim_target_modules", "adam_beta1", "adam_beta2", "adam_epsilon", "lr_scheduler_type",
    "lr_scheduler_kwargs", "warmup_steps",
    # replaced by each seed of --seeds
    "seed",
    # the same computation on other hardware or with other speed and memory: floating-point rounding at most
    "use_cpu", "torch_compile", "torch_compile_backend", "torch_compile_mode", "gradient_checkpointing",
    "gradient_checkpointing_kwargs", "activation_checkpointing", "activation_checkpointing_kwargs", "use_liger_kernel",
    "liger_kernel_config", "use_cache", "torch_empty_cache_steps", "full_determinism",
    # data loading: the augmentation is seeded by (seed, epoch, image), not by the worker
    "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "dataloader_multiprocessing_context",
    # the same computation split over processes (the prompt models' forward takes no loss kwargs, so Trainer never
    # averages tokens across devices)
    "local_rank", "ddp_find_unused_parameters", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "ddp_static_graph",
    "ddp_backend", "ddp_timeout", "fsdp", "fsdp_config", "deepspeed", "parallelism_config",
    "average_tokens_across_devices",
    # not read by Trainer
    "do_train", "do_eval", "do_predict",
}  # fmt: skip


def training_record(args: CoOpTrainingArguments) -> dict:
    """The run configuration's "training" fields of a 2-shot CoOp run with `args`, as `PromptLearning.plan` resolves
    them (the method's recipe, the epochs)."""
    coop = PROMPT_METHODS["coop"]
    args = coop.training_arguments(args)
    experiment = SimpleNamespace(dataset="caltech101", classnames=["daisy", "rose", "tulip"])
    return {"training": training_fields(args, coop.epochs(experiment, 2, args))}


def changed(args: CoOpTrainingArguments, name: str) -> CoOpTrainingArguments:
    """`args` with only `name` set to its RESULT_CHANGING value (set directly: tf32 and bf16 need a GPU to be
    constructed)."""
    other = copy.copy(args)
    setattr(other, name, RESULT_CHANGING[name][1])
    return other


@pytest.fixture(scope="module")
def default_arguments(tmp_path_factory) -> CoOpTrainingArguments:
    return CoOpTrainingArguments(output_dir=str(tmp_path_factory.mktemp("arguments")))


def test_every_training_argument_is_recorded_or_declared_not_to_change_results(default_arguments):
    fields = {field.name for field in dataclasses.fields(CoOpTrainingArguments)}
    assert not RESULT_CHANGING.keys() & NO_RESULT_CHANGE
    undecided = sorted(fields - RESULT_CHANGING.keys() - NO_RESULT_CHANGE)
    assert not undecided, f"Record these in run_config.json (records.training_fields) or list them here: {undecided}"
    assert not (RESULT_CHANGING.keys() | NO_RESULT_CHANGE) - fields  # no stale names
    # the record holds a key for every RESULT_CHANGING field, and no key of another field
    keys = set(training_record(default_arguments)["training"])
    keys.update(
        key for name in RESULT_CHANGING for key in training_record(changed(default_arguments, name))["training"]
    )
    expected = {key for key, _ in RESULT_CHANGING.values()}
    assert not expected - keys, f"run_config.json no longer records {sorted(expected - keys)}"
    assert not keys - expected, f"run_config.json records {sorted(keys - expected)}: add them to RESULT_CHANGING"


@pytest.mark.parametrize("name", sorted(RESULT_CHANGING))
def test_a_rerun_with_one_result_changing_argument_changed_is_refused(name, default_arguments, tmp_path):
    key = RESULT_CHANGING[name][0]
    config = training_record(default_arguments)
    assert claim_run_directory(tmp_path, config) is False
    assert claim_run_directory(tmp_path, training_record(default_arguments)) is True  # the same run: continue
    try:
        claim_run_directory(tmp_path, training_record(changed(default_arguments, name)))
    except RunConfigMismatchError as error:
        message = str(error)
    else:
        pytest.fail(f"A rerun with only {name} changed was accepted into the directory: run_config.json misses it.")
    named = re.search(rf"\n  training\.{key}[:.]", message)  # a dict's fields are listed one by one
    assert named, f"{name} changed alone was not told apart by training.{key}"
    assert json.loads((tmp_path / RUN_CONFIG_NAME).read_text()) == config  # nothing was touched
