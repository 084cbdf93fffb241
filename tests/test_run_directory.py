"""An output directory records its configuration; another configuration is refused before any work."""

import json
import shutil

import pytest

from coop_hf.data import load_benchmark
from coop_hf.run_directory import (
    RUN_CONFIG_NAME,
    RunConfigMismatchError,
    claim_run_directory,
    config_differences,
    splits_fingerprint,
)
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
