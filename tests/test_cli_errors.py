"""Bad model or dataset flags fail at once with a message naming the flag to change (never after Hub retries)."""

import os
import subprocess
import sys
import time

import pytest
from transformers import HfArgumentParser

from coop_hf import hub_access
from coop_hf.cli import TRACEBACK_VARIABLE, run_command
from coop_hf.data import load_dataset_splits
from coop_hf.hub_access import HubUnavailableError, model_load_kwargs
from coop_hf.noise import NoiseSpec
from coop_hf.runners import ExperimentArguments, LoadedBackbone, SweepArguments, run_method
from tests.conftest import DATA, REPO, load_example


def test_offline_model_id_fails_at_once_naming_the_flag():
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="--model_name_or_path 'openai/clip-vit-base-patch32' is not a"):
        LoadedBackbone.load("openai/clip-vit-base-patch32")
    assert time.perf_counter() - start < 5
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE=1"):
        model_load_kwargs("org/some-clip")


def test_a_missing_model_folder_is_named_as_such_not_as_a_bad_repo_id():
    with pytest.raises(ValueError, match=r"--model_name_or_path '\./no-clip' is neither a folder nor a Hub id"):
        model_load_kwargs("./no-clip")


def test_local_model_folder_loads_offline(tiny_clip_dir):
    assert model_load_kwargs(str(tiny_clip_dir)) == {}


def test_unreachable_hub_fails_fast_without_retries(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    probes = []
    monkeypatch.setattr(hub_access, "hub_is_reachable", lambda: probes.append(1) or False)  # no real request
    with pytest.raises(HubUnavailableError, match="cannot be reached"):
        model_load_kwargs("org/some-clip")
    with pytest.raises(HubUnavailableError, match="--dataset 'org/some-data' is not a local folder"):
        load_dataset_splits("org/some-data", None)
    assert len(probes) == 2


def test_offline_dataset_id_names_the_dataset_flags():
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError) as error:
        load_dataset_splits("dpdl-benchmark/oxford_flowers102", None)
    assert time.perf_counter() - start < 10
    message = str(error.value)
    assert "--dataset 'dpdl-benchmark/oxford_flowers102' could not be loaded" in message
    assert "oxford_flowers, caltech101" in message and "--data_dir" in message


def test_benchmark_name_without_data_dir_says_to_pass_it():
    with pytest.raises(HubUnavailableError, match="'caltech101' is a CoOp benchmark: pass --data_dir"):
        load_dataset_splits("caltech101", None)


def test_unknown_dataset_lists_the_benchmarks_and_suggests_a_close_one():
    with pytest.raises(HubUnavailableError) as error:
        load_dataset_splits("oxford_flower", None)
    message = str(error.value)
    assert "Did you mean 'oxford_flowers'?" in message
    assert "anything else is loaded with datasets.load_dataset as a Hub id or local folder" in message
    assert "?;" not in message and "?." not in message


def test_data_dir_with_a_non_benchmark_name_is_not_ignored():
    with pytest.raises(ValueError, match="--data_dir is the folder of the CoOp benchmarks, but --dataset 'flowers'"):
        load_dataset_splits("flowers", str(DATA))
    with pytest.raises(ValueError) as error:
        load_dataset_splits("caltech", str(DATA))
    assert "). Did you mean 'caltech101'? Give a benchmark name" in str(error.value)  # one mark, not "?."


def test_a_class_short_of_shots_names_the_flags_not_the_python_arguments(tiny_clip_dir, tmp_path):
    train = load_example("train")
    arguments = ["--model_name_or_path", str(tiny_clip_dir), "--dataset", "oxford_flowers", "--data_dir", str(DATA),
                 "--shots", "25", "--output_dir", str(tmp_path), "--method", "linear-probe"]  # fmt: skip
    with pytest.raises(ValueError) as error:
        train.main(arguments)
    message = str(error.value)
    assert "have fewer than 25 images" in message and "Lower --shots, or pass --allow_fewer_shots" in message
    assert "allow_fewer=True" not in message and "shots=" not in message


def test_a_noise_rate_without_a_noise_type_is_refused_naming_it():
    parser = HfArgumentParser((ExperimentArguments,))
    with pytest.raises(ValueError, match=r"^--noise_rate 0.5 without --noise_type adds no noise: pass --noise_type "):
        parser.parse_args_into_dataclasses(args=["--noise_rate", "0.5"])
    with pytest.raises(ValueError, match="--noise_type"):
        NoiseSpec("none", 0.25)
    (noisy,) = parser.parse_args_into_dataclasses(args=["--noise_rate", "0.5", "--noise_type", "symmetric"])
    assert noisy.noise() == NoiseSpec("symmetric", 0.5)
    with pytest.raises(ValueError, match="the study sweeps --study_noise_type over --noise_rates"):
        load_example("train_noisy").main(["--noise_rate", "0.5", "--noise_type", "replace", "--output_dir", "/tmp"])


def test_a_misspelt_method_gets_a_suggestion():
    with pytest.raises(ValueError, match=r"Unknown --method 'copo': use one of zeroshot, .*\. Did you mean 'coop'\?$"):
        run_method(ExperimentArguments(method="copo"), None, None)
    with pytest.raises(ValueError, match=r"Did you mean 'coop'\?$"):
        load_example("sweep").check_grid(SweepArguments(method=["copo"]))
    with pytest.raises(ValueError, match=r"not a prompt method; .*Did you mean 'cocoop'\?$"):
        load_example("train").main(["--help", "cocop"])


@pytest.mark.slow
def test_a_user_error_is_one_line_and_exit_status_2(tiny_clip_dir, tmp_path):
    command = [sys.executable, str(REPO / "examples" / "train.py"), "--model_name_or_path", str(tiny_clip_dir),
               "--dataset", "oxford_flowers", "--data_dir", str(DATA), "--output_dir", str(tmp_path)]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    arguments = ["--method", "kgcoop", "--loss", "gce"]  # a user error only the package sees
    completed = subprocess.run([*command, *arguments], capture_output=True, text=True, env=environment)
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.strip().splitlines()[-1] == (
        "error: --loss gce would replace KgCoOp's own loss (cross-entropy plus its regulariser): use --loss ce with "
        "--method kgcoop."
    )
    assert "Traceback" not in completed.stderr


def test_the_traceback_of_a_user_error_on_request(monkeypatch):
    def bad_flag(argv):
        raise ValueError("--shots takes ...")

    with pytest.raises(SystemExit) as stopped:
        run_command(bad_flag)
    assert stopped.value.code == 2
    monkeypatch.setenv(TRACEBACK_VARIABLE, "1")
    with pytest.raises(ValueError, match="--shots takes"):
        run_command(bad_flag)


def test_ctrl_c_says_how_to_resume_and_real_faults_keep_their_traceback(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stopped:
        run_command(interrupted)
    assert stopped.value.code == 130
    assert capsys.readouterr().err.strip().startswith("interrupted: rerun the same command with --resume_from")

    def faulty(argv):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_command(faulty)
