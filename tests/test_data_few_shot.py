"""Few-shot sampling: the official CoOp/Dassl draw seed for seed, K per class, val min(K, 4), errors, allow_fewer."""

import hashlib
import json
import os
import random
from collections import Counter
from pathlib import Path

import datasets
import pytest
from PIL import Image

from coop_hf.data import build_few_shot_splits, column_values, load_benchmark, sample_few_shot
from coop_hf.data.few_shot import row_keys
from tests.conftest import DATA

OFFICIAL = json.loads((Path(__file__).parent / "fixtures" / "official_few_shot_picks.json").read_text())
IMAGE_DIRS = {
    "oxford_flowers": DATA / "oxford_flowers" / "jpg",
    "caltech101": DATA / "caltech-101" / "101_ObjectCategories",
}


def _synthetic(counts: dict[str, int]) -> datasets.Dataset:
    """A dataset of (unreadable, never decoded) image paths with ``counts[name]`` rows per class."""
    names = list(counts)
    paths, labels = [], []
    for label, name in enumerate(names):
        for index in range(counts[name]):
            paths.append(f"/nowhere/{name}/{index:03d}.jpg")
            labels.append(label)
    return _from_labels(labels, names, paths)


def _from_labels(labels: list[int], names: list[str], paths: list[str] | None = None) -> datasets.Dataset:
    paths = paths or [f"/nowhere/{row:03d}.jpg" for row in range(len(labels))]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=names),
            "image_path": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict({"image": paths, "label": labels, "image_path": paths}, features=features)


@pytest.fixture(scope="module")
def pool() -> datasets.Dataset:
    return _synthetic({"cat": 20, "dog": 12, "fox": 9})


@pytest.fixture(scope="module")
def benchmarks() -> dict[str, datasets.DatasetDict]:
    return {name: load_benchmark(name, DATA) for name in IMAGE_DIRS}


@pytest.mark.parametrize(
    "official", OFFICIAL["picks"], ids=lambda pick: f"{pick['dataset']}-seed{pick['seed']}-{pick['shots']}shots"
)
def test_same_picks_as_the_official_code(benchmarks, official):
    few = build_few_shot_splits(benchmarks[official["dataset"]], official["shots"], official["seed"])
    image_dir = IMAGE_DIRS[official["dataset"]]
    for split in ("train", "val"):
        picked = [os.path.relpath(path, image_dir) for path in few[split]["image_path"]]
        assert picked == official[split], f"{split} picks differ from CoOp's"
    assert len(few["test"]) == len(benchmarks[official["dataset"]]["test"])


def test_official_fixture_covers_both_datasets_seeds_and_shots():
    combos = {(pick["dataset"], pick["seed"], pick["shots"]) for pick in OFFICIAL["picks"]}
    assert combos == {(name, seed, shots) for name in IMAGE_DIRS for seed in (1, 2, 3) for shots in (1, 2, 4, 8, 16)}


def test_fewer_than_k_with_allow_fewer_matches_the_reference():
    reference = OFFICIAL["synthetic_fewer_than_k"]
    labels = reference["labels"]
    dataset = _from_labels(labels, [f"class{label}" for label in range(max(labels) + 1)])
    with pytest.raises(ValueError, match=r"1 class\(es\) have fewer than 6 images: 3 'class3' \(3\)"):
        sample_few_shot(dataset, reference["shots"], reference["seed"])
    drawn = sample_few_shot(dataset, reference["shots"], reference["seed"], allow_fewer=True)
    assert [int(Path(path).stem) for path in drawn["image_path"]] == reference["rows"]


def test_exactly_k_per_class(pool):
    sample = sample_few_shot(pool, 8, seed=1)
    assert Counter(sample["label"]) == {0: 8, 1: 8, 2: 8}
    assert len(set(sample["image_path"])) == 24
    assert sample.features == pool.features


def test_same_seed_same_draw_and_different_seeds_differ(pool):
    first = sample_few_shot(pool, 4, seed=3)["image_path"]
    assert sample_few_shot(pool, 4, seed=3)["image_path"] == first
    draws = {tuple(sample_few_shot(pool, 4, seed=seed)["image_path"]) for seed in (1, 2, 3)}
    assert len(draws) == 3


def test_global_random_state_is_neither_used_nor_changed(pool):
    splits = datasets.DatasetDict({"train": pool, "test": pool})
    random.seed(0)
    state = random.getstate()
    first = build_few_shot_splits(splits, 4, seed=5)
    assert random.getstate() == state
    random.seed(123)
    again = build_few_shot_splits(splits, 4, seed=5)
    assert again["train"]["image_path"] == first["train"]["image_path"]
    assert again["val"]["image_path"] == first["val"]["image_path"]


def test_fewer_than_k_names_the_class_and_the_cli_flag(pool):
    with pytest.raises(ValueError, match=r"fewer than 10 images: 2 'fox' \(9\).*--allow_fewer_shots"):
        sample_few_shot(pool, 10, seed=1)
    sample = sample_few_shot(pool, 10, seed=1, allow_fewer=True)
    assert Counter(sample["label"]) == {0: 10, 1: 10, 2: 9}
    fox = [path for path in sample["image_path"] if "/fox/" in path]
    assert fox == [path for path in pool["image_path"] if "/fox/" in path]  # all of them, in row order


@pytest.mark.parametrize("shots", [0, -1, 1.5, True])
def test_shots_must_be_a_positive_integer(pool, shots):
    with pytest.raises(ValueError, match="shots must be an integer >= 1"):
        sample_few_shot(pool, shots, seed=1)
    with pytest.raises(ValueError, match="shots must be an integer >= 1"):
        build_few_shot_splits(datasets.DatasetDict({"train": pool, "test": pool}), shots, seed=1)


def test_build_few_shot_splits_with_val(pool):
    splits = datasets.DatasetDict({"train": pool, "val": _synthetic({"cat": 6, "dog": 5, "fox": 4}), "test": pool})
    few = build_few_shot_splits(splits, 8, seed=1)
    assert few["train"]["image_path"] == sample_few_shot(pool, 8, seed=1)["image_path"]  # train comes first
    assert Counter(few["val"]["label"]) == {0: 4, 1: 4, 2: 4}
    assert len(few["test"]) == len(pool)
    two = build_few_shot_splits(splits, 2, seed=1)
    assert Counter(two["val"]["label"]) == {0: 2, 1: 2, 2: 2}
    short_val = datasets.DatasetDict({"train": pool, "val": _synthetic({"cat": 6, "dog": 5, "fox": 3}), "test": pool})
    with pytest.raises(ValueError, match=r"val split: .*fewer than 4 images: 2 'fox' \(3\).*--allow_fewer_shots"):
        build_few_shot_splits(short_val, 8, seed=1)
    assert Counter(build_few_shot_splits(short_val, 8, seed=1, allow_fewer=True)["val"]["label"]) == {0: 4, 1: 4, 2: 3}


def test_build_few_shot_splits_carves_val_from_unused_train_on_the_same_stream(pool):
    few = build_few_shot_splits(datasets.DatasetDict({"train": pool, "test": pool}), 4, seed=2)
    rng = random.Random(2)
    rows = {label: [row for row, value in enumerate(pool["label"]) if value == label] for label in range(3)}
    train = {label: rng.sample(class_rows, 4) for label, class_rows in rows.items()}
    left = {label: [row for row in rows[label] if row not in train[label]] for label in rows}
    val = [row for label in rows for row in rng.sample(left[label], 4)]
    assert few["train"]["image_path"] == [pool["image_path"][row] for label in rows for row in train[label]]
    assert few["val"]["image_path"] == [pool["image_path"][row] for row in val]
    with pytest.raises(
        ValueError, match=r"val \(from the train images not drawn for train\): .*'fox' \(1\).*--allow_fewer_shots"
    ):
        build_few_shot_splits(datasets.DatasetDict({"train": pool, "test": pool}), 8, seed=2)


def test_row_keys_without_image_path_hash_the_image_bytes(tmp_path):
    files = []
    for index in range(3):
        path = tmp_path / f"{index}.png"
        Image.new("RGB", (4, 4), (index * 20, 0, 0)).save(path)
        files.append(path)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a"])})
    dataset = datasets.Dataset.from_dict({"image": [str(f) for f in files], "label": [0, 0, 0]}, features=features)
    embedded = dataset.cast_column("image", datasets.Image(decode=False)).map(
        lambda row: {"image": {"bytes": Path(row["image"]["path"]).read_bytes(), "path": None}}
    )
    assert row_keys(embedded) == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


def test_column_values_reads_a_whole_column_in_row_order_without_the_format_or_transform():
    dataset = _synthetic({"a": 3, "b": 4}).select([6, 0, 3, 5])  # an indices mapping, rows out of order
    expected = [row["label"] for row in dataset.select_columns(["label"])]

    def unreadable(batch):
        raise AssertionError("column_values ran the dataset's transform (it would decode every image)")

    for view in (dataset, dataset.with_format("numpy"), dataset.with_transform(unreadable)):
        assert column_values(view, "label") == expected == [1, 0, 1, 1]
    assert column_values(dataset, "image_path") == [
        f"/nowhere/{name}" for name in ("b/003.jpg", "a/000.jpg", "b/000.jpg", "b/002.jpg")
    ]
