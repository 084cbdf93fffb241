"""What a user sees on the console: one line per seed and a mean ± std line per run, each epoch's loss, no
progress bars of checkpoint writes, scikit-learn's convergence warning once, no train_loss of 0 on a resume."""

import json
import warnings

import numpy as np
import pytest

from coop_hf.baselines import fit_linear_probe
from tests.test_train_e2e import flags, run_in_process


@pytest.mark.slow
def test_a_run_ends_with_a_mean_std_line_and_logs_every_epochs_loss(tiny_clip_dir, tmp_path, capsys):
    results = run_in_process(flags(tiny_clip_dir, tmp_path, "--method", "kgcoop", "--seeds", "1", "2"))
    out, err = capsys.readouterr()
    assert "Writing model shards" not in err
    assert out.count("kgcoop | oxford_flowers | 1 shot | seed 2 (2/2)") == 2  # training ..., test accuracy ...
    summary = out.strip().splitlines()[-1]
    assert summary == (
        f"[coop-hf] kgcoop | oxford_flowers | 1 shot | 2 seeds: test accuracy {results['accuracy']:.2f} ± "
        f"{results['accuracy_std']:.2f} % (zero-shot {results['zeroshot_accuracy']:.2f} %) -> {tmp_path}/results.json"
    )
    # KgCoOp's batch of 128 makes one step per epoch on 102 images: each epoch's loss is logged all the same
    state = json.loads((tmp_path / "seed1" / "trainer_state.json").read_text())
    assert [entry["epoch"] for entry in state["log_history"] if "loss" in entry] == [1, 2]


@pytest.mark.slow
def test_eval_strategy_epoch_logs_the_validation_accuracy_of_every_epoch(tiny_clip_dir, tmp_path, capsys):
    results = run_in_process(flags(tiny_clip_dir, tmp_path, "--eval_strategy", "epoch"))
    state = json.loads((tmp_path / "seed1" / "trainer_state.json").read_text())
    evaluations = [entry for entry in state["log_history"] if "eval_accuracy" in entry]
    assert [entry["epoch"] for entry in evaluations] == [1, 2]
    assert all(0 <= entry["eval_accuracy"] <= 100 for entry in evaluations)
    assert "'eval_accuracy'" in capsys.readouterr().out
    plain = run_in_process(flags(tiny_clip_dir, tmp_path / "plain"))
    assert results["accuracy"] == plain["accuracy"]  # the reported model is the last epoch's either way


def test_a_seed_resumed_from_its_final_checkpoint_logs_no_zero_train_loss(tiny_clip_dir, tmp_path, capsys):
    run_in_process(flags(tiny_clip_dir, tmp_path))
    (tmp_path / "seed1" / "seed_result.json").unlink()  # killed after training, before its result was written
    capsys.readouterr()
    run_in_process(flags(tiny_clip_dir, tmp_path, "--resume_from_checkpoint", "true"))
    out = capsys.readouterr().out
    assert "resuming from" in out and "train_runtime" in out and "train_loss" not in out


@pytest.mark.slow
def test_baselines_announce_each_seed(tiny_clip_dir, tmp_path, capsys):
    run_in_process(flags(tiny_clip_dir, tmp_path / "zs", "--method", "zeroshot", "--seeds", "1", "2"))
    out = capsys.readouterr().out
    assert "zeroshot | oxford_flowers | seeds 1 2: CLIP with the template and the 8-template ensemble" in out
    assert "zeroshot | oxford_flowers: test accuracy" in out.strip().splitlines()[-1]
    probe = run_in_process(flags(tiny_clip_dir, tmp_path / "lp", "--method", "linear-probe", "--seeds", "1", "2"))
    out = capsys.readouterr().out
    seed = probe["per_seed"][1]
    assert f"linear-probe | oxford_flowers | 1 shot | seed 2 (2/2): test accuracy {seed['accuracy']:.2f} %" in out


def test_scikit_learn_convergence_warning_is_said_once(transformers_logs):
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(40, 8)), np.arange(40) % 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing else escapes
        for _ in range(2):  # two seeds, 15 fits each, every one stopped by max_iter
            fit_linear_probe(features, labels, features, labels, max_iter=1, progress=False)
    said = [record for record in transformers_logs.records if "linear probe:" in record.getMessage()]
    assert len(said) == 1 and "Such fits stop there" in said[0].getMessage()
