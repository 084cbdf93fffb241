"""The label-noise study and unsupervised prompt learning, end to end on the real mini Caltech101."""

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coop_hf import CoOpEnsemble
from coop_hf.baselines import fit_linear_probe
from coop_hf.data import load_benchmark
from coop_hf.noise import NoiseSpec
from coop_hf.runners import Experiment, LoadedBackbone, NoiseStudyArguments, PromptArguments, baselines
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.training import CoOpTrainingArguments
from tests.conftest import DATA, load_example


def common(tiny_clip_dir, output_dir) -> list[str]:
    return [
        "--model_name_or_path", str(tiny_clip_dir), "--dataset", "caltech101", "--data_dir", str(DATA),
        "--n_ctx", "4", "--num_train_epochs", "1", "--output_dir", str(output_dir), "--disable_tqdm", "true",
        "--learning_rate", "0.05",
    ]  # fmt: skip


@pytest.mark.slow
def test_noise_sweep_with_ce_gce_and_linear_probe(tiny_clip_dir, tmp_path, monkeypatch):
    # The probe's C search (15 lbfgs fits over 100 classes per run) would take most of the test's time.
    monkeypatch.setattr(
        baselines, "fit_linear_probe", functools.partial(fit_linear_probe, bisection_steps=0, max_iter=50)
    )
    summary = load_example("train_noisy").main(
        [*common(tiny_clip_dir, tmp_path), "--shots", "2", "--noise_rates", "0", "0.5", "--seeds", "1"]
    )
    runs = {(run["study_method"], run["noise_rate_requested"]): run for run in summary["runs"]}
    assert set(runs) == {(m, r) for m in ("CoOp (CE)", "CoOp (GCE)", "Linear probe CLIP") for r in (0.0, 0.5)}
    assert runs[("CoOp (GCE)", 0.5)]["loss"] == "gce" and runs[("CoOp (GCE)", 0.5)]["gce_q"] == 0.5
    assert runs[("CoOp (CE)", 0.5)]["loss"] == "ce"
    for (_, rate), run in runs.items():
        assert run["noise_type"] == "replace" and run["noise_rate_requested"] == rate
        assert run["noise_rate_actual"] == pytest.approx(rate)  # 1 of 2 shots replaced in every class
    saved = json.loads((tmp_path / "coop-gce-noise0.5" / "results.json").read_text())
    assert saved["noise_rate_actual"] == 0.5 and saved["per_seed"][0]["noisy_shots"] == 100
    table = (tmp_path / "results.md").read_text()
    assert "| Model | 0 % noise | 50 % noise |" in table and table.count("±") == 6
    plots = sorted(path.name for path in (tmp_path / "plots").iterdir())
    assert plots == ["accuracy_vs_noise.png", "noise_confusion.png", "predictions_coop-ce-noise0.5.png",
                     "predictions_coop-gce-noise0.5.png"]  # fmt: skip
    assert all(Image.open(tmp_path / "plots" / name).size[0] > 300 for name in plots)
    card = (tmp_path / "coop-gce-noise0.5" / "seed1" / "README.md").read_text()
    assert "| loss | generalised cross-entropy (q = 0.5) |" in card
    assert "| label noise | replace, 50 % requested, 50.0 % actual, train split (val clean) |" in card


@pytest.mark.slow
def test_one_command_runs_the_study_on_several_datasets_and_averages_them(tiny_clip_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(
        baselines, "fit_linear_probe", functools.partial(fit_linear_probe, bisection_steps=0, max_iter=50)
    )
    study = load_example("train_noisy")
    flags = [
        "--model_name_or_path", str(tiny_clip_dir), "--data_dir", str(DATA), "--shots", "2", "--seeds", "1",
        "--noise_rates", "0.5", "--study_methods", "coop:ce", "linear-probe", "--n_ctx", "4", "--max_steps", "1",
        "--disable_tqdm", "true",
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"--dataset names the same folder more than once \(caltech101\)"):
        study.main([*flags, "--dataset", "caltech101", "caltech101", "--output_dir", str(tmp_path / "twice")])
    assert not (tmp_path / "twice").exists()

    record = study.main([*flags, "--dataset", "caltech101", "oxford_flowers", "--output_dir", str(tmp_path / "both")])
    alone = study.main([*flags, "--dataset", "oxford_flowers", "--output_dir", str(tmp_path / "flowers")])
    assert [summary["dataset"] for summary in record["datasets"]] == ["caltech101", "oxford_flowers"]
    for summary in record["datasets"]:
        folder = tmp_path / "both" / summary["dataset"]
        assert json.loads((folder / "results.json").read_text())["runs"] == json.loads(json.dumps(summary["runs"]))
        assert {path.name for path in (folder / "plots").iterdir()} >= {"accuracy_vs_noise.png", "noise_confusion.png"}
    # Each dataset's study is the one its own command runs.
    flowers = record["datasets"][1]["runs"]
    assert [[seed["accuracy"] for seed in run["per_seed"]] for run in flowers] == [
        [seed["accuracy"] for seed in run["per_seed"]] for run in alone["runs"]
    ]
    # The average: per seed, the mean of the datasets' accuracies; then mean ± std over the seeds (0 for one seed,
    # where a spread over the datasets would not be).
    caltech = record["datasets"][0]["runs"]
    for mean, first, second in zip(record["average"], caltech, flowers, strict=True):
        pairs = zip(first["per_seed"], second["per_seed"], strict=True)
        per_seed = [(a["accuracy"] + b["accuracy"]) / 2 for a, b in pairs]
        assert mean["study_method"] == first["study_method"] and mean["noise_rate_requested"] == 0.5
        assert [seed["accuracy"] for seed in mean["per_seed"]] == pytest.approx(per_seed)
        assert mean["accuracy"] == pytest.approx(np.mean(per_seed)) and mean["accuracy_std"] == pytest.approx(
            np.std(per_seed)
        )
    table = (tmp_path / "both" / "results.md").read_text()
    assert table.index("## caltech101") < table.index("## oxford_flowers") < table.index("## Average over 2 datasets")
    linear = record["average"][1]
    assert f"| Linear probe CLIP | {linear['accuracy']:.2f} ± {linear['accuracy_std']:.2f} |" in table
    assert json.loads((tmp_path / "both" / "results.json").read_text())["average"] == record["average"]
    assert Image.open(tmp_path / "both" / "plots" / "accuracy_vs_noise.png").size[0] > 300


def test_noisy_label_runs_follow_the_ptnl_protocol(tmp_path):
    experiment = Experiment(None, "caltech101", str(DATA))  # reads the split files only; no CLIP needed here
    args = CoOpTrainingArguments(output_dir=str(tmp_path))
    coop = PROMPT_METHODS["coop"]
    assert coop.epochs(experiment, 16, args, NoiseSpec("replace", 0.0)) == 50  # PTNL: 50 epochs at every shot count
    assert coop.epochs(experiment, 16, args) == 200  # CoOp's schedule without noise
    given = CoOpTrainingArguments(output_dir=str(tmp_path), num_train_epochs=3)
    assert coop.epochs(experiment, 16, given, NoiseSpec("replace")) == 3
    clean, _ = experiment.few_shot(4, 1, noise=NoiseSpec("symmetric", 0.5))
    assert "clean_label" not in clean["val"].column_names  # the validation split stays clean by default
    assert (np.asarray(clean["train"]["label"]) != np.asarray(clean["train"]["clean_label"])).mean() == 0.5
    noisy, _ = experiment.few_shot(4, 1, noise=NoiseSpec("symmetric", 0.5, val=True))
    assert (np.asarray(noisy["val"]["label"]) != np.asarray(noisy["val"]["clean_label"])).mean() == 0.5
    assert clean["train"]["image_path"] == noisy["train"]["image_path"]


@pytest.mark.slow
def test_upl_trains_from_pseudo_labels_and_saves_the_seed_ensemble(tiny_clip_dir, tmp_path):
    results = load_example("train_upl").main([*common(tiny_clip_dir, tmp_path), "--shots", "1", "--seeds", "1", "2"])
    assert results["method"] == "upl" and results["seeds"] == [1, 2] and len(results["per_seed"]) == 2
    assert 0 < results["pseudo_labels"] <= 100  # at most 1 per predicted class
    # Every class that no image was confidently assigned to is named, with its count (0 here: top 1 per class).
    assert len(results["pseudo_label_shortfall"]) == 100 - results["pseudo_labels"]
    assert set(results["pseudo_label_shortfall"].values()) <= {0}
    assert 0 <= results["pseudo_label_accuracy"] <= 100 and "accuracy_zeroshot" in results
    assert json.loads((tmp_path / "results.json").read_text())["accuracy"] == results["accuracy"]

    # The saved ensemble reproduces the reported accuracy, and its logits are the mean of the seeds' logits.
    ensemble = CoOpEnsemble.from_pretrained(tmp_path / "ensemble")
    backbone = LoadedBackbone.load(str(tiny_clip_dir))
    test = backbone.features(load_benchmark("caltech101", DATA)["test"], batch_size=100)
    with torch.no_grad():
        logits = ensemble(image_embeds=test["image_embeds"]).logits
        members = torch.stack([m(image_embeds=test["image_embeds"]).logits for m in ensemble.members]).mean(0)
    torch.testing.assert_close(logits, members)
    accuracy = 100.0 * int((logits.argmax(-1) == test["labels"]).sum()) / len(test["labels"])
    assert accuracy == pytest.approx(results["accuracy"], abs=1e-9)
    assert "UPL ensemble of 2 prompts" in (tmp_path / "ensemble" / "README.md").read_text()


def test_upl_star_averages_the_probabilities_of_several_backbones(tiny_clip_dir, tmp_path):
    from coop_hf.methods.upl import pseudo_label_dataset
    from coop_hf.runners.upl import pseudo_label_shortfall, zero_shot_probabilities
    from tests.conftest import random_clip, tiny_clip_config

    second_dir = tmp_path / "second-clip"
    random_clip(tiny_clip_config(), seed=7).save_pretrained(second_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                 "preprocessor_config.json"):  # fmt: skip
        if (tiny_clip_dir / name).is_file():
            (second_dir / name).write_bytes((tiny_clip_dir / name).read_bytes())
    unlabeled = load_benchmark("caltech101", DATA)["train"].select(range(60))
    classnames = unlabeled.features["label"].names
    probabilities = [
        zero_shot_probabilities(
            LoadedBackbone.load(str(path)), unlabeled, classnames, ["a photo of a {}."], batch_size=30
        )
        for path in (tiny_clip_dir, second_dir)
    ]
    mean = (probabilities[0] + probabilities[1]) / 2
    assert not torch.equal(probabilities[0].argmax(-1), probabilities[1].argmax(-1))
    pseudo = pseudo_label_dataset(unlabeled, mean.log(), 2)
    expected = mean.argmax(-1)
    row_of = {path: row for row, path in enumerate(unlabeled["image_path"])}
    assert [int(expected[row_of[path]]) for path in pseudo["image_path"]] == list(pseudo["label"])
    assert {int(label) for label in pseudo["label"]} == set(expected.tolist())
    assert pseudo_label_shortfall(pseudo, 2) == {
        name: int((expected == label).sum()) for label, name in enumerate(classnames) if (expected == label).sum() < 2
    }


@pytest.mark.slow
def test_context_length_ablation_and_model_choice_in_one_command(tiny_clip_dir, tmp_path):
    flags = [
        *common(tiny_clip_dir, tmp_path),
        "--shots",
        "1",
        "--noise_rates",
        "0.5",
        "--seeds",
        "1",
        "--max_steps",
        "1",
    ]
    flags = [flag for flag in flags if flag not in ("--n_ctx", "4")]
    summary = load_example("train_noisy").main([*flags, "--study_methods", "coop:gce", "--n_ctx_values", "2", "4"])
    assert [run["study_method"] for run in summary["runs"]] == ["CoOp (GCE, M=2)", "CoOp (GCE, M=4)"]
    assert [run["n_ctx"] for run in summary["runs"]] == [2, 4]
    assert (tmp_path / "coop-gce-nctx2-noise0.5" / "results.json").is_file()
    with pytest.raises(ValueError, match="--study_methods coop:mae"):
        load_example("train_noisy").main([*flags, "--study_methods", "coop:mae", "--output_dir", str(tmp_path / "x")])


@pytest.mark.slow
def test_gradient_flow_of_each_model_at_the_noisiest_rate(tiny_clip_dir, tmp_path):
    flags = [
        *common(tiny_clip_dir, tmp_path), "--shots", "2", "--noise_rates", "0", "0.5", "--seeds", "1",
        "--max_steps", "3", "--cached_views", "2", "--study_methods", "coop:ce", "classifier-r:gce",
    ]  # fmt: skip
    summary = load_example("train_noisy").main([*flags, "--gradient_flow", "true"])
    runs = {(run["study_method"], run["noise_rate_requested"]): run for run in summary["runs"]}
    for label in ("CoOp (CE)", "Classifier-R (GCE)"):
        seed = runs[(label, 0.5)]["per_seed"][0]
        steps = json.loads((Path(seed["prompt_dir"]) / "gradient_flow.json").read_text())["steps"]
        assert [step["step"] for step in steps] == [1, 2, 3]
        # every cached view keeps its image's true class: half of the 2-shot split's rows are noisy
        assert all(step["clean_samples"] + step["noisy_samples"] == 32 for step in steps)
        assert 0 < sum(step["noisy_samples"] for step in steps) < 96
        assert seed["gradient_flow"]["clean"] > 0 and seed["gradient_flow"]["noisy"] > 0
        assert "gradient_flow" not in runs[(label, 0.0)]["per_seed"][0]  # nothing to tell apart without noise
    table = (tmp_path / "results.md").read_text()
    assert "Gradient flow at 50 % noise" in table and "| Classifier-R (GCE) |" in table.split("Gradient flow")[1]
    assert Image.open(tmp_path / "plots" / "gradient_flow.png").size[0] > 600
    with pytest.raises(ValueError, match="gradient_flow"):  # the run directories hold traced runs
        load_example("train_noisy").main(flags)


def test_fitted_methods_join_the_noise_study_labelled_by_their_loss_only_where_they_have_one():
    train_noisy = load_example("train_noisy")
    study = NoiseStudyArguments(study_methods=["tip-adapter", "tip-adapter-f:gce", "lp++"])
    models = train_noisy.study_models(study, PromptArguments())
    assert [model.label for model in models] == ["Tip-Adapter", "Tip-Adapter-F (GCE)", "LP++"]
    assert [model.slug for model in models] == ["tip-adapter", "tip-adapter-f-gce", "lp++"]
    assert not any(model.trains_by_steps for model in models)  # no gradient flow to trace
    with pytest.raises(ValueError, match=r"--study_methods lp\+\+:gce: LP\+\+ is fitted by its own procedure"):
        train_noisy.study_models(NoiseStudyArguments(study_methods=["lp++:gce"]), PromptArguments())
