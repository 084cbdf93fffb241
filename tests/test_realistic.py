"""The realistic evaluation protocol (`--protocol realistic`): long-tailed shots, no validation, one recipe."""

import functools
import json
from collections import Counter
from types import SimpleNamespace

import datasets
import pytest

from coop_hf.baselines import fit_linear_probe
from coop_hf.data.imbalance import build_imbalanced_splits, imbalanced_indices, long_tailed_shots
from coop_hf.methods.tip_adapter import TipAdapterConfig
from coop_hf.runners import baselines
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.runners.realistic import compare_protocols, comparison_markdown, plot_comparison
from coop_hf.runners.settings import RunSettings
from coop_hf.training import CoOpTrainingArguments
from tests.conftest import DATA, flowers_split, flowers_with_garbage, load_example
from tests.test_train_e2e import flags, run_in_process


@pytest.mark.parametrize("classes, mean, ratio", [(102, 4, 10), (10, 16, 20), (37, 2.5, 5), (7, 8, 1)])
def test_long_tailed_shots_follow_the_documented_profile(classes, mean, ratio):
    shots = long_tailed_shots(classes, mean, ratio, seed=1)
    assert shots == long_tailed_shots(classes, mean, ratio, seed=1)  # deterministic per seed
    assert len(shots) == classes and min(shots) >= 1
    assert sum(shots) == round(mean * classes) or min(shots) == 1  # the mean, unless the floor of 1 raised it
    ordered = sorted(shots, reverse=True)
    assert ordered[0] / ordered[-1] == pytest.approx(ratio, rel=0.35)  # up to rounding
    expected = [round(mean * classes) * ratio ** (-c / (classes - 1)) for c in range(classes)]
    total = sum(ratio ** (-c / (classes - 1)) for c in range(classes))
    assert all(abs(n - e / total) < 1 or n == 1 for n, e in zip(ordered, expected, strict=True))


def test_the_tail_keeps_at_least_one_shot():
    shots = sorted(long_tailed_shots(10, 16, 100, seed=1))  # the tail's exact 0.64 shots: one
    assert shots[0] == 1 and shots[-1] == 64 and sum(shots) == 160


def test_the_profile_is_balanced_at_ratio_one_and_permuted_by_the_seed():
    assert long_tailed_shots(5, 4, 1, seed=3) == [4] * 5
    one, two = long_tailed_shots(50, 4, 10, seed=1), long_tailed_shots(50, 4, 10, seed=2)
    assert sorted(one) == sorted(two) and one != two
    with pytest.raises(ValueError, match="imbalance_ratio"):
        long_tailed_shots(5, 4, 0.5, seed=1)
    with pytest.raises(ValueError, match="mean_shots"):
        long_tailed_shots(5, 0.5, 10, seed=1)


def toy_splits() -> datasets.DatasetDict:
    features = datasets.Features({"image": datasets.Value("string"), "label": datasets.ClassLabel(names=list("abc"))})
    rows = [{"image": f"{label}-{i}", "label": label} for i in range(6) for label in range(3)]
    split = datasets.Dataset.from_list(rows, features=features)
    return datasets.DatasetDict({"train": split, "val": split, "test": split})


def test_the_draw_takes_each_class_its_count_and_no_validation():
    splits = build_imbalanced_splits(toy_splits(), [5, 1, 3], seed=7)
    assert Counter(splits["train"]["label"]) == {0: 5, 1: 1, 2: 3}
    assert len(splits["val"]) == 0 and len(splits["test"]) == 18
    assert imbalanced_indices(toy_splits()["train"], [5, 1, 3], 7) == imbalanced_indices(
        toy_splits()["train"], [5, 1, 3], 7
    )
    with pytest.raises(ValueError, match="--allow_fewer_shots"):
        imbalanced_indices(toy_splits()["train"], [7, 1, 1], 7)
    rows = imbalanced_indices(toy_splits()["train"], [7, 1, 1], 7, allow_fewer=True)
    assert Counter(toy_splits()["train"].select(rows)["label"]) == {0: 6, 1: 1, 2: 1}


def test_the_papers_protocol_is_unchanged_and_recorded_as_before():
    run = RunSettings(4, [1])
    assert run.evaluation == "papers" and run.shots_per_class(10, 1) is None and run.evaluation_fields() == {}
    realistic = RunSettings(4, [1], evaluation="realistic", imbalance_ratio=5)
    assert realistic.shots_per_class(10, 1) == long_tailed_shots(10, 4, 5, 1)
    assert realistic.evaluation_fields() == {
        "evaluation": {"protocol": "realistic", "imbalance_ratio": 5, "mean_shots": 4}
    }
    assert RunSettings(4, [1], evaluation="realistic", protocol="base_to_new").realistic  # every study takes it
    with pytest.raises(ValueError, match="papers or realistic"):
        RunSettings(4, [1], evaluation="real")


def test_one_recipe_for_every_dataset():
    """No per-dataset epochs (CoOp's ImageNet 50) and no per-dataset settings but the class prompts: Tip-Adapter keeps
    its config's general alpha and beta and searches nothing."""
    coop, args = PROMPT_METHODS["coop"], CoOpTrainingArguments(output_dir="unused")
    imagenet = SimpleNamespace(dataset="imagenet", classnames=["a", "b"])
    assert coop.epochs(imagenet, 16, args) == 50 and coop.epochs(imagenet, 16, args, realistic=True) == 200
    tip = PROMPT_METHODS["tip-adapter"]
    flowers = SimpleNamespace(dataset="oxford_flowers")
    papers, realistic = tip.method_settings(flowers, {}), tip.method_settings(flowers, {}, realistic=True)
    assert papers["init_alpha"] != TipAdapterConfig().init_alpha and "init_alpha" not in realistic
    assert realistic["search_steps"] == [0, 0] and realistic["templates"] == papers["templates"]
    lp = PROMPT_METHODS["lp++"]
    assert lp.method_settings(flowers, {"keep_epoch": "last"}, realistic=True)["keep_epoch"] == "last"
    with pytest.raises(ValueError, match=r"--protocol realistic fixes --keep_epoch 'last' .* --protocol papers"):
        lp.method_settings(flowers, {"keep_epoch": "best_validation"}, realistic=True)


def without_n_ctx(arguments: list[str]) -> list[str]:
    position = arguments.index("--n_ctx")
    return arguments[:position] + arguments[position + 2 :]


@pytest.fixture(scope="module")
def flowers_with_unreadable_val(tmp_path_factory):
    """The shared Flowers102 as symlinks, with every validation image replaced by garbage, and Caltech101 beside it
    (one folder for the module, so that its runs share the cached features of the test splits)."""
    folder = flowers_with_garbage(tmp_path_factory.mktemp("data"), {path for path, _, _ in flowers_split()["val"]})
    (folder / "caltech-101").symlink_to(DATA / "caltech-101")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("method", ["coop", "linear-probe", "tip-adapter", "tip-adapter-f", "lp++"])
def test_a_realistic_run_reads_no_validation_image_and_records_its_protocol(
    tiny_clip_dir, tmp_path, method, flowers_with_unreadable_val
):
    data = flowers_with_unreadable_val
    out = tmp_path / "out"
    extra = ["--augment_views", "1"] if method.startswith("tip-adapter") else []
    extra += ["--num_train_epochs", "3"] if method in ("tip-adapter-f", "lp++") else []
    arguments = [*flags(tiny_clip_dir, out, "--method", method, *extra), "--data_dir", str(data)]
    if method in ("tip-adapter", "tip-adapter-f", "lp++"):  # no context tokens
        arguments = without_n_ctx(arguments)
    seeds = ["1", "2"] if method == "coop" else ["2"]  # two seeds draw two profiles; one is enough for the others
    arguments += ["--protocol", "realistic", "--mean_shots", "2", "--imbalance_ratio", "5", "--seeds", *seeds]
    results = run_in_process(arguments)
    protocol = {"protocol": "realistic", "imbalance_ratio": 5.0, "mean_shots": 2.0}
    config = json.loads((out / "run_config.json").read_text())
    assert {key: value for key, value in config["evaluation"].items() if key != "linear_probe_C"} == protocol
    assert results["evaluation"]["protocol"] == "realistic"
    for run in results["per_seed"]:
        assert run["shots_per_class"] == long_tailed_shots(102, 2.0, 5.0, run["seed"])
    if method == "linear-probe":
        assert config["evaluation"]["linear_probe_C"] == 1.0 and results["per_seed"][0]["C"] == 1.0
    if method.startswith("tip-adapter"):
        assert results["search_steps"] == [0, 0] and results["init_alpha"] == TipAdapterConfig().init_alpha
    if method in ("tip-adapter-f", "lp++"):  # validation-free: the last epoch is kept
        assert results["keep_epoch"] == "last"
        for seed in map(int, seeds):
            logged = json.loads((out / f"seed{seed}" / "trainer_state.json").read_text())["log_history"]
            assert [entry["best_epoch"] for entry in logged if "best_epoch" in entry] == [3]


def test_the_comparison_table_marks_the_drop_and_the_methods_below_zero_shot(tmp_path):
    def rows(accuracies):
        return [
            {"dataset": dataset, "method": method, "shots": shots, "seed": seed, "accuracy": accuracy}
            for (dataset, method, shots), values in accuracies.items()
            for seed, accuracy in enumerate(values, start=1)
        ]

    zero = {("a", "zeroshot", 0): [50, 50], ("b", "zeroshot", 0): [60, 60]}
    papers = rows({**zero, ("a", "coop", 4): [70, 72], ("b", "coop", 4): [80, 80]})
    realistic = rows({**zero, ("a", "coop", 4): [48, 50], ("b", "coop", 4): [70, 70]})
    entries = compare_protocols(papers, realistic)
    assert [(e["dataset"], e["method"]) for e in entries] == [("a", "coop"), ("b", "coop"), ("Average", "coop")]
    first, average = entries[0], entries[-1]
    assert first["papers"] == 71 and first["realistic"] == 49 and first["difference"] == -22
    assert first["realistic_below_zeroshot"] and not first["papers_below_zeroshot"]
    assert average["zeroshot"] == 55 and average["difference"] == -16
    table = comparison_markdown(entries)
    assert "| a | coop | 4 | 50.00 | 71.00 | 49.00 † | -22.00 |" in table
    plot_comparison(entries, tmp_path / "comparison.png")
    assert (tmp_path / "comparison.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The number of unique classes is greater than 50%")
def test_compare_protocols_runs_both_sweeps_in_shards_then_writes_the_comparison(
    tiny_clip_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(baselines, "fit_linear_probe", functools.partial(fit_linear_probe, bisection_steps=0))
    compare = load_example("compare_protocols")
    out = tmp_path / "compare"
    command = [
        "--model_name_or_path", str(tiny_clip_dir), "--dataset", "oxford_flowers", "--data_dir", str(DATA),
        "--method", "linear-probe", "--shots", "2", "--seeds", "1", "--output_dir", str(out), "--disable_tqdm", "true",
    ]  # fmt: skip
    # two workers share both grids (zero-shot CLIP and the linear probe under each protocol), compare nothing
    assert compare.main([*command, "--shard", "1/2"]) == [] and compare.main([*command, "--shard", "2/2"]) == []
    assert not (out / "comparison.md").exists()
    finished = sorted(str(path.parent.relative_to(out)) for path in out.glob("*/*/*/*/results.json"))
    assert finished == [
        f"{protocol}/oxford_flowers/{method}" for protocol in ("papers", "realistic")
        for method in ("linear-probe/shots2", "zeroshot/shots0")
    ]  # fmt: skip
    capsys.readouterr()
    entries = compare.main(command)  # runs nothing again
    assert capsys.readouterr().out.count("(finished earlier)") == 4
    assert [(e["method"], e["shots"]) for e in entries] == [("linear-probe", 2)]
    assert (out / "papers/oxford_flowers/zeroshot/shots0/results.json").is_file()
    config = json.loads((out / "realistic/oxford_flowers/linear-probe/shots2/run_config.json").read_text())
    assert config["evaluation"]["protocol"] == "realistic"
    assert "evaluation" not in json.loads(
        (out / "papers/oxford_flowers/linear-probe/shots2/run_config.json").read_text()
    )
    assert "| oxford_flowers | linear-probe | 2 |" in (out / "comparison.md").read_text()
    assert (out / "comparison.png").is_file() and json.loads((out / "comparison.json").read_text()) == entries


@pytest.mark.slow
def test_base_to_new_and_transfer_train_under_the_realistic_protocol(
    tiny_clip_dir, tmp_path, flowers_with_unreadable_val
):
    """Base-to-new draws the long-tailed counts over the base classes and transfer over the source's, neither reads
    a validation image (they are garbage here), and the tables say which protocol they hold."""
    data = flowers_with_unreadable_val
    common = [
        "--model_name_or_path", str(tiny_clip_dir), "--data_dir", str(data), "--disable_tqdm", "true",
        "--report_to", "none", "--num_train_epochs", "1", "--n_ctx", "4", "--protocol", "realistic",
        "--mean_shots", "2", "--imbalance_ratio", "5", "--seeds", "2",
    ]  # fmt: skip
    caption = "Realistic protocol: long-tailed shots (imbalance ratio 5, mean 2 per class), no validation image"

    (record,) = load_example("base_to_new").main(
        [*common, "--dataset", "oxford_flowers", "--output_dir", str(tmp_path / "b2n")]
    )
    assert record["evaluation"] == {"protocol": "realistic", "imbalance_ratio": 5.0, "mean_shots": 2.0}
    assert len(record["base_classes"]) == 51
    for run in record["per_seed"]:
        assert run["shots_per_class"] == long_tailed_shots(51, 2.0, 5.0, run["seed"])
    assert caption in (tmp_path / "b2n" / "results.md").read_text()

    out = tmp_path / "transfer"
    transfer = load_example("transfer").main(
        [*common, "--source", "oxford_flowers", "--targets", "caltech101", "--output_dir", str(out)]
    )
    assert transfer["evaluation"]["protocol"] == "realistic"
    for run in transfer["source"]["per_seed"]:
        assert run["shots_per_class"] == long_tailed_shots(102, 2.0, 5.0, run["seed"])
    table = (out / "results.md").read_text()
    changes = [
        transfer["source"]["accuracy"] - transfer["source"]["zeroshot_accuracy"],
        *(target["accuracy"] - target["zeroshot_accuracy"] for target in transfer["targets"]),
        transfer["average"]["accuracy"] - transfer["average"]["zeroshot_accuracy"],
    ]
    assert "| Change vs zero-shot |  | " + " | ".join(f"{change:+.2f}" for change in changes) + " |" in table
    assert caption in table
