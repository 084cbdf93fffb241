"""Nothing is written to --output_dir before the checks pass: a folder the script cannot write in is refused before
any work, naming the flag, and an unreadable test image stops a run before its directory is claimed, so the
corrected rerun with other flags is not refused as another configuration."""

import re
from pathlib import Path

import pytest

from coop_hf import CoOpModel
from coop_hf.data import UnreadableImageError
from coop_hf.run_directory import check_run_directory, claim_run_directory
from tests.conftest import DATA, flowers_split, flowers_with_garbage, load_example

FLOWERS = ["--dataset", "oxford_flowers", "--shots", "1", "--num_train_epochs", "1", "--disable_tqdm", "true"]


def flowers_with_a_corrupt_test_image(folder: Path) -> tuple[Path, str]:
    """The shared Flowers102 as symlinks, with its first test image replaced by garbage; (data folder, that image)."""
    broken = flowers_split()["test"][0][0]
    return flowers_with_garbage(folder, {broken}), broken


@pytest.fixture(scope="module")
def corrupt_data(tmp_path_factory):
    return flowers_with_a_corrupt_test_image(tmp_path_factory.mktemp("corrupt"))


@pytest.mark.parametrize("method", ["zeroshot", "coop"])
def test_a_corrupt_test_image_leaves_the_run_directory_unclaimed(tiny_clip_dir, tmp_path, corrupt_data, method):
    train = load_example("train")
    data, broken = corrupt_data
    out = tmp_path / "out"
    common = ["--model_name_or_path", str(tiny_clip_dir), *FLOWERS, "--method", method, "--output_dir", str(out)]
    with pytest.raises(UnreadableImageError, match=broken):
        train.main([*common, "--data_dir", str(data)])
    assert not out.exists() or not any(out.iterdir())
    # The corrected rerun, with another shot count, is not refused as another configuration.
    results = train.main([*common, "--data_dir", str(DATA), "--shots", "2"])
    assert 0 <= results["accuracy"] <= 100 and (out / "run_config.json").is_file()


def test_evaluate_prompt_with_a_corrupt_test_image_writes_nothing(tiny_clip_dir, tmp_path, corrupt_data):
    evaluate = load_example("evaluate_prompt")
    data, broken = corrupt_data
    for n_ctx in (4, 2):
        CoOpModel.from_clip(str(tiny_clip_dir), ["a", "b"], n_ctx=n_ctx).save_pretrained(tmp_path / f"ctx{n_ctx}")
    out = tmp_path / "eval"
    arguments = ["--dataset", "oxford_flowers", "--output_dir", str(out)]
    with pytest.raises(UnreadableImageError, match=broken):
        evaluate.main(["--prompt", str(tmp_path / "ctx4"), *arguments, "--data_dir", str(data)])
    assert not out.exists() or not any(out.iterdir())
    results = evaluate.main(["--prompt", str(tmp_path / "ctx2"), *arguments, "--data_dir", str(DATA)])
    assert results["prompt"]["name_or_path"] == str(tmp_path / "ctx2") and (out / "results.json").is_file()


def test_a_sweep_with_a_corrupt_test_image_claims_no_cell(tiny_clip_dir, tmp_path, corrupt_data):
    data, broken = corrupt_data
    arguments = ["--model_name_or_path", str(tiny_clip_dir), "--dataset", "oxford_flowers", "--data_dir", str(data),
                 "--method", "zeroshot", "linear-probe", "--shots", "1", "--output_dir", str(tmp_path)]  # fmt: skip
    with pytest.raises(UnreadableImageError, match=broken):
        load_example("sweep").main(arguments)
    assert not list(tmp_path.rglob("run_config.json"))


@pytest.mark.parametrize(
    ("script", "arguments"),
    [
        ("train", ["--feature_cache_dir", "{blocked}"]),
        ("train", ["--output_dir", "{blocked}"]),
        ("sweep", ["--output_dir", "{blocked}"]),
        ("train_noisy", ["--output_dir", "{blocked}"]),
        ("evaluate_prompt", ["--prompt", "org/coop", "--dataset", "caltech101", "--output_dir", "{blocked}"]),
        ("make_tiny_clip", ["--tokenizer_from", "org/clip", "--output_dir", "{blocked}"]),
    ],
)
def test_a_folder_the_script_cannot_write_is_refused_before_any_work(tmp_path, script, arguments):
    """Checked as the flags are parsed (the Hub ids, offline, would fail right after): one line naming the flag."""
    (tmp_path / "file").write_text("")
    blocked = str(tmp_path / "file" / "out")
    flag = arguments[arguments.index("{blocked}") - 1]
    message = f"{flag} '{blocked}' cannot be written (Not a directory: {tmp_path / 'file'}): pass a folder you can"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        load_example(script).main([argument.replace("{blocked}", blocked) for argument in arguments])


def test_the_default_output_dir_is_checked_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "trainer_output").write_text("")  # TrainingArguments' default --output_dir, as a file
    with pytest.raises(ValueError, match="^--output_dir 'trainer_output' cannot be written"):
        load_example("train").main([])


def test_the_run_directory_check_writes_nothing_and_refuses_an_unwritable_folder(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="--output_dir .* cannot be written"):
        claim_run_directory(tmp_path / "file" / "out", {"shots": 1})
    assert check_run_directory(tmp_path / "new", {"shots": 1}) is False and not (tmp_path / "new").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["file"]  # the write probe left nothing behind
    assert claim_run_directory(tmp_path / "new", {"shots": 1}) is False
    assert check_run_directory(tmp_path / "new", {"shots": 1}) is True
