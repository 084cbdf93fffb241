"""examples/sweep.py (a datasets x methods x shots x seeds grid on one CLIP) and its tables and figures."""

import csv
import functools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from coop_hf import CoOpConfig
from coop_hf.baselines import fit_linear_probe
from coop_hf.run_directory import RunConfigMismatchError
from coop_hf.runners import baselines
from coop_hf.runners.arguments import FEW_SHOT_BENCHMARKS
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.runners.prompt_learning import PromptRun
from coop_hf.runners.reporting import (
    average_over_datasets,
    method_labels,
    plot_shot_curves,
    plot_sweep,
    read_rows_csv,
    results_markdown,
    results_table,
    rows_csv,
    summarize,
)
from coop_hf.training import CoOpTrainingArguments
from tests.conftest import DATA, load_example


def rows_of(dataset: str, method: str, shots: int, accuracies: list[float]) -> list[dict]:
    return [
        {"dataset": dataset, "method": method, "shots": shots, "seed": seed, "accuracy": accuracy}
        for seed, accuracy in enumerate(accuracies, start=1)
    ]


# CoOp's COOP.md example: seeds 91.81 / 92.01 / 92.17 give "92.00% +- 0.15%" with parse_test_res.py (ddof=0).
COOP_MD_SEEDS = [91.81, 92.01, 92.17]


def test_table_cells_are_the_mean_and_population_std_over_seeds():
    rows = [
        *rows_of("caltech101", "coop", 16, COOP_MD_SEEDS),
        *rows_of("caltech101", "coop", 1, [80.0, 84.0, 85.0]),
        *rows_of("caltech101", "linear-probe", 16, [70.0]),
        *rows_of("caltech101", "zeroshot", 0, [86.29, 86.29, 86.29]),
    ]
    summary = summarize(rows)
    # Population std 0.1473 ("0.15" as in COOP.md); the sample std (ddof=1) would be 0.1804.
    assert summary["coop", 16] == (pytest.approx(sum(COOP_MD_SEEDS) / 3), pytest.approx(0.147271, abs=1e-6), 3)
    assert results_table(rows).splitlines() == [
        "| Method | 0 shots | 1 shot | 16 shots |",
        "|---|---|---|---|",
        "| Zero-shot CLIP | 86.29 | – | – |",  # seed-independent: the mean alone
        "| CoOp | – | 83.00 ± 2.16 | 92.00 ± 0.15 |",
        "| Linear probe CLIP | – | – | 70.00 |",  # one seed: no spread to show
    ]
    with pytest.raises(ValueError, match="several datasets"):
        summarize([*rows, *rows_of("dtd", "coop", 16, [1.0])])


def test_average_over_datasets_averages_each_seed_then_aggregates():
    rows = [
        *rows_of("caltech101", "coop", 1, [10.0, 20.0]),
        *rows_of("oxford_flowers", "coop", 1, [30.0, 60.0]),
        *rows_of("caltech101", "zeroshot", 0, [50.0, 50.0]),
        *rows_of("oxford_flowers", "zeroshot", 0, [70.0, 70.0]),
        *rows_of("caltech101", "coop", 2, [40.0, 40.0]),  # not run on Flowers102: left out of the average
    ]
    average = average_over_datasets(rows)
    assert sorted((row["method"], row["shots"], row["seed"], row["accuracy"]) for row in average) == [
        ("coop", 1, 1, 20.0),
        ("coop", 1, 2, 40.0),
        ("zeroshot", 0, 1, 60.0),
        ("zeroshot", 0, 2, 60.0),
    ]
    markdown = results_markdown(rows, intro="# Study")
    sections = markdown.split("\n## ")
    assert sections[0] == "# Study\n"
    assert sections[1].splitlines()[:5] == [
        "Average over 2 datasets",
        "",
        "| Method | 0 shots | 1 shot |",
        "|---|---|---|",
        "| Zero-shot CLIP | 60.00 | – |",
    ]
    assert "| CoOp | – | 30.00 ± 10.00 |" in sections[1]
    assert sections[2].startswith("Caltech101\n") and "| CoOp | – | 15.00 ± 5.00 | 40.00 ± 0.00 |" in sections[2]
    assert sections[3].startswith("Flowers102\n") and "| CoOp | – | 45.00 ± 15.00 |" in sections[3]
    assert "Average" not in results_markdown(rows_of("dtd", "coop", 1, [1.0, 2.0]))


def test_method_labels_and_csv_round_trip(tmp_path):
    assert method_labels(["zeroshot", "linear-probe", "coop"]) == {
        "zeroshot": "Zero-shot CLIP",
        "linear-probe": "Linear probe CLIP",
        "coop": "CoOp",
    }
    rows = rows_of("dtd", "coop", 4, [55.5, 56.25])
    (tmp_path / "rows.csv").write_text(rows_csv(rows, ["dataset", "method", "shots", "seed", "accuracy"]))
    assert read_rows_csv(tmp_path / "rows.csv") == rows


def assert_png(path: Path, min_size=(400, 300)) -> None:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] >= min_size[0] and image.size[1] >= min_size[1]


def test_plots_write_png_figures(tmp_path):
    rows = [
        *rows_of("caltech101", "zeroshot", 0, [60.0, 60.0]),
        *(row for k in (1, 2, 4) for row in rows_of("caltech101", "coop", k, [60.0 + 3 * k, 62.0 + 3 * k])),
        *(row for k in (1, 2, 4) for row in rows_of("caltech101", "linear-probe", k, [40.0 + 5 * k, 41.0 + 5 * k])),
    ]
    assert plot_shot_curves(rows, tmp_path / "one.png") == tmp_path / "one.png"
    assert_png(tmp_path / "one.png")
    flowers = [{**row, "dataset": "oxford_flowers"} for row in rows]
    paths = plot_sweep([*rows, *flowers], tmp_path / "plots")
    assert sorted(path.name for path in paths) == ["all.png", "average.png", "caltech101.png", "oxford_flowers.png"]
    for path in paths:
        assert_png(path)
    assert sorted(path.name for path in (tmp_path / "plots").iterdir()) == sorted(path.name for path in paths)
    every_method = [row for m in PROMPT_METHODS for k in (1, 2) for row in rows_of("caltech101", m, k, [50.0 + k])]
    assert len(PROMPT_METHODS) > 8  # more lines than colours: the colours come round with other markers
    assert_png(plot_shot_curves([*rows, *every_method], tmp_path / "every.png"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--method", "zeroshot", "cop"], "Unknown --method cop"),
        (["--method", "zeroshot", "linear-probe", "--n_ctx", "4"], "--n_ctx is a setting of none of the prompt"),
        (["--method", "coop", "zeroshot", "coop"], "--method lists coop more than once"),
        (["--shots", "0", "1"], "--shots takes counts of at least 1"),
        (["--dataset", "a/dtd", "b/dtd"], "same folder more than once"),
        (["--method", "coop", "coop:nope=1"], r"--method 'coop:nope=1': --nope is no prompt setting"),
        (["--method", "coop:n_ctx"], r"write a variant as <method>:<setting>=<value>"),
        (["--method", "coop:n_ctx=four"], r"--method 'coop:n_ctx=four': argument --n_ctx.*invalid int value"),
        (["--method", "zeroshot:n_ctx=4"], "only prompt methods take settings"),
        (["--method", "coop:templates=a"], "--method coop has no setting --templates"),
    ],
)
def test_bad_grids_fail_before_loading_anything(flags, message, tmp_path):
    # A model path that does not exist: each error must come before the backbone is loaded.
    with pytest.raises(ValueError, match=message):
        sweep = load_example("sweep")
        sweep.main(["--model_name_or_path", str(tmp_path / "no-clip"), "--output_dir", str(tmp_path), *flags])


class Killed(Exception):
    """Stands for the sweep's process being killed."""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The number of unique classes is greater than 50%")
def test_sweep_writes_tables_and_plots_skips_finished_cells_and_resumes(tiny_clip_dir, tmp_path, monkeypatch, capsys):
    sweep = load_example("sweep")
    out = tmp_path / "sweep"
    flags = [
        "--model_name_or_path", str(tiny_clip_dir), "--dataset", "caltech101", "oxford_flowers", "--data_dir",
        str(DATA), "--method", "zeroshot", "linear-probe", "coop", "--shots", "1", "2", "--seeds", "1", "2",
        "--num_train_epochs", "1", "--n_ctx", "4", "--learning_rate", "0.05", "--output_dir", str(out),
        "--disable_tqdm", "true",
    ]  # fmt: skip
    calls = {"zeroshot": 0, "linear-probe": 0, "train_seed": 0}
    kill_at = {"train_seed": None}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            if calls[name] == kill_at.get(name):
                raise Killed()
            return function(*args, **kwargs)

        return wrapper

    # The probe's C search (15 lbfgs fits over 100+ classes per seed) would take most of the test's time.
    monkeypatch.setattr(
        baselines, "fit_linear_probe", functools.partial(fit_linear_probe, bisection_steps=0, max_iter=50)
    )
    monkeypatch.setattr(sweep, "run_zeroshot", counting("zeroshot", sweep.run_zeroshot))
    monkeypatch.setattr(sweep, "run_linear_probe", counting("linear-probe", sweep.run_linear_probe))
    monkeypatch.setattr(PromptRun, "train_seed", counting("train_seed", PromptRun.train_seed))

    # Killed while training the 6th prompt: Flowers102's 1-shot CoOp has finished seed 1, not seed 2.
    kill_at["train_seed"] = 6
    with pytest.raises(Killed):
        sweep.main(flags)
    assert calls == {"zeroshot": 2, "linear-probe": 4, "train_seed": 6}
    partial = read_rows_csv(out / "results.csv")
    assert len(partial) == 10 + 6  # Caltech101's 5 cells, then Flowers102's zero-shot and linear probe cells
    assert (out / "oxford_flowers/coop/shots1/seed1/seed_result.json").is_file()
    assert not (out / "oxford_flowers/coop/shots1/results.json").exists()
    finished = {path: path.stat().st_mtime_ns for path in out.glob("*/*/shots*/results.json")}
    assert len(finished) == 8

    # The rerun skips the 8 finished cells and the finished seed: it trains the 3 missing prompts only.
    calls.update(zeroshot=0, **{"linear-probe": 0, "train_seed": 0})
    kill_at["train_seed"] = None
    capsys.readouterr()
    rows = sweep.main(flags)
    assert calls == {"zeroshot": 0, "linear-probe": 0, "train_seed": 3}
    assert {path: path.stat().st_mtime_ns for path in finished} == finished
    printed = capsys.readouterr().out
    assert "caltech101 | linear-probe | 2 shots: " in printed and "(finished earlier)" in printed
    line = next(line for line in printed.splitlines() if "oxford_flowers | coop | 2 shots: " in line)
    results = json.loads((out / "oxford_flowers/coop/shots2/results.json").read_text())
    assert f"{results['accuracy']:.2f} ± {results['accuracy_std']:.2f} % test accuracy" in line

    # results.csv: one row per dataset, method, shots and seed, with each cell's per-seed results.
    with open(out / "results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["dataset", "method", "shots", "seed", "accuracy", "macro_accuracy", "run_dir"]
    expected_cells = {
        (dataset, method, shots)
        for dataset in ("caltech101", "oxford_flowers")
        for method, shots in [("zeroshot", 0), ("linear-probe", 1), ("linear-probe", 2), ("coop", 1), ("coop", 2)]
    }
    assert len(table) == 20 and len(rows) == 20
    assert {(row["dataset"], row["method"], int(row["shots"])) for row in table} == expected_cells
    for dataset, method, shots in expected_cells:
        cell = [row for row in table if (row["dataset"], row["method"], int(row["shots"])) == (dataset, method, shots)]
        results = json.loads((out / cell[0]["run_dir"] / "results.json").read_text())
        assert cell[0]["run_dir"] == f"{dataset}/{method}/shots{shots}"
        assert [int(row["seed"]) for row in cell] == [1, 2]
        assert [float(row["accuracy"]) for row in cell] == [run["accuracy"] for run in results["per_seed"]]
        assert json.loads((out / cell[0]["run_dir"] / "run_config.json").read_text())["method"] == method

    # results.md: the average table first, then one per dataset; mean ± std cells.
    markdown = (out / "results.md").read_text()
    assert (
        markdown.index("## Average over 2 datasets")
        < markdown.index("## Caltech101")
        < markdown.index("## Flowers102")
    )
    caltech = summarize([row for row in rows if row["dataset"] == "caltech101"])
    mean, std, _ = caltech["coop", 2]
    assert f"| CoOp | – | {caltech['coop', 1][0]:.2f} ± {caltech['coop', 1][1]:.2f} | {mean:.2f} ± {std:.2f} |" in (
        markdown
    )
    assert markdown.count("| Zero-shot CLIP |") == 3 and markdown.count("| Linear probe CLIP | – |") == 3
    for name in ("average", "caltech101", "oxford_flowers", "all"):
        assert_png(out / "plots" / f"{name}.png")

    # A third run has nothing left to do.
    calls.update(zeroshot=0, **{"linear-probe": 0, "train_seed": 0})
    assert sweep.main(flags) == rows
    assert calls == {"zeroshot": 0, "linear-probe": 0, "train_seed": 0}

    # Other settings stop the sweep before any work, naming the cell and the differing field.
    with pytest.raises(
        RunConfigMismatchError, match=r"(?s)caltech101/coop/shots1 holds a run of another.*learning_rate"
    ):
        sweep.main([*flags, "--learning_rate", "0.01"])
    assert calls == {"zeroshot": 0, "linear-probe": 0, "train_seed": 0}


@pytest.mark.slow
def test_two_shards_then_a_plain_run_give_the_unsharded_results(tiny_clip_dir, tmp_path, monkeypatch, capsys):
    sweep = load_example("sweep")
    flags = [
        "--model_name_or_path", str(tiny_clip_dir), "--dataset", "caltech101", "--data_dir", str(DATA),
        "--method", "zeroshot", "coop", "--shots", "1", "2", "--seeds", "1", "--num_train_epochs", "1",
        "--n_ctx", "4", "--learning_rate", "0.05", "--disable_tqdm", "true",
    ]  # fmt: skip
    whole = tmp_path / "whole"
    sweep.main([*flags, "--output_dir", str(whole)])
    sharded = tmp_path / "sharded"
    calls = []
    train_seed = PromptRun.train_seed

    def counting(self, *args, **kwargs):
        calls.append(self.run.shots)
        return train_seed(self, *args, **kwargs)

    monkeypatch.setattr(PromptRun, "train_seed", counting)
    for shard in ("1/2", "2/2"):
        sweep.main([*flags, "--output_dir", str(sharded), "--shard", shard])
        assert f"shard {shard}: " in capsys.readouterr().out
        assert not (sharded / "results.csv").exists()  # the tables and plots wait for the plain run
    assert sorted(calls) == [1, 2]  # the 3 cells (zero-shot, coop 1 and 2 shots) split over the shards
    sweep.main([*flags, "--output_dir", str(sharded)])
    assert sorted(calls) == [1, 2]  # nothing trained again
    assert (sharded / "results.csv").read_text() == (whole / "results.csv").read_text()
    assert (sharded / "plots" / "caltech101.png").is_file()
    with pytest.raises(ValueError, match=r"--shard takes I/N with 1 <= I <= N \(e.g. --shard 1/4\), got '3/2'"):
        sweep.main([*flags, "--output_dir", str(sharded), "--shard", "3/2"])


def test_the_tables_show_the_papers_figure_beside_the_cell_it_belongs_to():
    """CoOp's RN50 figures apply to OpenAI's RN50 under any of its names, under the papers' protocol, to CoOp with the
    paper's 16 context vectors at the end (given or by default; not to a variant or other flags), to trained cells
    only without label noise, GCE or a recipe's training flag, and the 11-dataset average only to a grid of exactly
    those datasets in which every cell qualifies."""
    sweep = load_example("sweep")
    config = functools.partial(CoOpConfig, classnames=["a", "b"])

    def cell(dataset, method, shots, **settings):
        planned = SimpleNamespace(prompt_config=config(**settings)) if method.startswith("coop") else None
        return SimpleNamespace(
            experiment=SimpleNamespace(dataset=dataset), method=method, shots=shots, planned=planned
        )

    cells = [
        cell("imagenet", "zeroshot", 0), cell("imagenet", "linear-probe", 16), cell("imagenet", "coop", 16),
        cell("imagenet", "coop", 8), cell("imagenet", "coop:n_ctx=4", 16, n_ctx=4), cell("caltech101", "zeroshot", 0),
    ]  # fmt: skip
    given = {"coop": {"n_ctx": 16}, "coop:n_ctx=4": {"n_ctx": 4}}  # the default given as a flag still counts

    def grid(name, datasets=("imagenet", "caltech101"), protocol="papers", noise=False, loss="ce"):
        return SimpleNamespace(
            model_name_or_path=name, dataset=list(datasets), protocol=protocol, loss=loss,
            noise=lambda: SimpleNamespace(active=noise),
        )  # fmt: skip

    args = CoOpTrainingArguments(output_dir="unused")
    zero_shot = {("imagenet", "zeroshot", 0): 58.18, ("caltech101", "zeroshot", 0): 86.29}
    rn50 = "open_clip:RN50/openai"
    for name in (rn50, "hf-hub:timm/resnet50_clip.openai", "open_clip:RN50-quickgelu/openai"):
        assert sweep.published_figures(grid(name), cells, given, args) == {
            **zero_shot, ("imagenet", "linear-probe", 16): 55.87, ("imagenet", "coop", 16): 62.95
        }  # fmt: skip
    other_coop = sweep.published_figures(grid(rn50), cells, {**given, "coop": {"n_ctx": 8}}, args)
    assert ("imagenet", "coop", 16) not in other_coop and len(other_coop) == 3
    for trained_otherwise in (grid(rn50, noise=True), grid(rn50, loss="gce")):
        assert sweep.published_figures(trained_otherwise, cells, given, args) == zero_shot
    other_rate = CoOpTrainingArguments(output_dir="unused", learning_rate=0.01)
    assert sweep.published_figures(grid(rn50), cells, given, other_rate) == zero_shot
    assert sweep.published_figures(grid(rn50, protocol="realistic"), cells, given, args) == {}
    for name in ("open_clip:RN50/yfcc15m", "openai/clip-vit-base-patch16", "outputs/tiny-random-clip"):
        assert sweep.published_figures(grid(name, ["imagenet"]), cells, given, args) == {}
    vit_b16 = grid("openai/clip-vit-base-patch16", FEW_SHOT_BENCHMARKS)
    every = [cell(dataset, "coop", 16) for dataset in FEW_SHOT_BENCHMARKS]
    assert sweep.published_figures(vit_b16, every, {"coop": {}}, args) == {("average", "coop", 16): 79.01}
    tip = [cell(dataset, "tip-adapter-f", 16) for dataset in FEW_SHOT_BENCHMARKS]
    assert sweep.published_figures(vit_b16, tip, {"tip-adapter-f": {}}, args) == {
        ("average", "tip-adapter-f", 16): 81.15
    }
    # ImageNet's alpha given for every dataset: its defaults on ImageNet, not on Flowers102: no average figure
    assert sweep.published_figures(vit_b16, tip, {"tip-adapter-f": {"init_alpha": 1.17}}, args) == {}

    rows = [*rows_of("imagenet", "coop", 16, [62.0, 63.0]), *rows_of("imagenet", "coop", 8, [60.0, 60.0])]
    table = results_markdown(rows, published={("imagenet", "coop", 16): 62.95})
    assert "| CoOp | 60.00 ± 0.00 | 62.50 ± 0.50 (paper 62.95) |" in table


@pytest.mark.slow
def test_a_method_listed_as_variants_runs_each_in_its_own_folder(tiny_clip_dir, tmp_path):
    """CoOp's four layouts in one sweep: each variant a cell of its own, its settings recorded and in its label."""
    out = tmp_path / "sweep"
    variant = "coop:class_token_position=middle,class_specific_context=true"
    rows = load_example("sweep").main([
        "--model_name_or_path", str(tiny_clip_dir), "--dataset", "oxford_flowers", "--data_dir", str(DATA),
        "--method", "coop", variant, "--shots", "1", "--seeds", "1", "--max_steps", "1", "--n_ctx", "4",
        "--output_dir", str(out), "--disable_tqdm", "true", "--report_to", "none",
    ])  # fmt: skip
    folder = "coop-class_token_position=middle-class_specific_context=true"
    assert [row["run_dir"] for row in rows] == ["oxford_flowers/coop/shots1", f"oxford_flowers/{folder}/shots1"]
    plain, middle = (json.loads((out / row["run_dir"] / "run_config.json").read_text())["prompt"] for row in rows)
    assert (plain["class_token_position"], plain["class_specific_context"], plain["n_ctx"]) == ("end", False, 4)
    assert (middle["class_token_position"], middle["class_specific_context"], middle["n_ctx"]) == ("middle", True, 4)
    assert "| CoOp (class_token_position=middle, class_specific_context=true) |" in (out / "results.md").read_text()


def test_a_cells_hub_repository_id_is_one_the_hub_accepts():
    """Pushing a sweep names one repository per cell from its folder: "lp++" and a variant's "=" and "," are not
    characters of a Hub name, and a long variant passes the 96-character limit."""
    from huggingface_hub.utils import validate_repo_id

    hub_repo_id = load_example("sweep").hub_repo_id
    variant = "coop-class_token_position=middle-class_specific_context=true"
    ids = [
        hub_repo_id("me/prompts-lp++-oxford_flowers-16shots"),
        hub_repo_id(f"me/prompts-{variant}-oxford_flowers-16shots"),
        hub_repo_id(f"{variant}-{variant}-caltech101-1shots"),
        hub_repo_id(f"{variant}-{variant}-caltech101-2shots"),
    ]
    for repo_id in ids:
        validate_repo_id(repo_id)
    assert ids[0] == "me/prompts-lp-oxford_flowers-16shots"
    assert len(ids[2]) <= 96 < len(variant) * 2 and ids[2] != ids[3]  # cut, and still apart


def test_a_variants_settings_are_typed_as_the_flags_are():
    from coop_hf.runners.arguments import variant_settings

    assert variant_settings("coop") == {}
    assert variant_settings("coop:n_ctx=4,class_specific_context=true") == {"n_ctx": 4, "class_specific_context": True}
    assert variant_settings("clip-lora:lora_params=q v") == {"lora_params": ["q", "v"]}  # a list: apart by spaces
    assert variant_settings("kgcoop:template=-{}-") == {"template": "-{}-"}  # a value may start with "-"
