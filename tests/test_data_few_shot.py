"""Few-shot sampling: K per class, seeded, independent of row order; val min(K, 4); errors and allow_fewer."""

from collections import Counter
from pathlib import Path

import datasets
import pytest
from PIL import Image

from coop_hf.data import build_few_shot_splits, load_benchmark, sample_few_shot
from tests.conftest import DATA


def _synthetic(counts: dict[str, int]) -> datasets.Dataset:
    """A dataset of (unreadable, never decoded) image paths with ``counts[name]`` rows per class."""
    names = list(counts)
    paths, labels = [], []
    for label, name in enumerate(names):
        for index in range(counts[name]):
            paths.append(f"/nowhere/{name}/{index:03d}.jpg")
            labels.append(label)
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


def test_exactly_k_per_class(pool):
    sample = sample_few_shot(pool, 8, seed=1)
    assert Counter(sample["label"]) == {0: 8, 1: 8, 2: 8}
    assert len(set(sample["image_path"])) == 24
    assert sample.features == pool.features


def test_same_seed_same_draw_and_independent_of_row_order(pool):
    first = sample_few_shot(pool, 4, seed=3)["image_path"]
    assert sample_few_shot(pool, 4, seed=3)["image_path"] == first
    shuffled = pool.shuffle(seed=123)
    assert shuffled["image_path"] != pool["image_path"]
    assert sample_few_shot(shuffled, 4, seed=3)["image_path"] == first


def test_different_seeds_draw_differently(pool):
    draws = {tuple(sample_few_shot(pool, 4, seed=seed)["image_path"]) for seed in (1, 2, 3)}
    assert len(draws) == 3


def test_fewer_than_k_names_the_class_and_suggests_allow_fewer(pool):
    with pytest.raises(ValueError, match=r"Class 2 'fox' has 9 image\(s\).*shots=10.*allow_fewer=True"):
        sample_few_shot(pool, 10, seed=1)
    sample = sample_few_shot(pool, 10, seed=1, allow_fewer=True)
    assert Counter(sample["label"]) == {0: 10, 1: 10, 2: 9}


@pytest.mark.parametrize("shots", [0, -1, 1.5, True])
def test_shots_must_be_a_positive_integer(pool, shots):
    with pytest.raises(ValueError, match="shots must be an integer >= 1"):
        sample_few_shot(pool, shots, seed=1)
    with pytest.raises(ValueError, match="shots must be an integer >= 1"):
        build_few_shot_splits(datasets.DatasetDict({"train": pool, "test": pool}), shots, seed=1)


def test_without_image_path_rows_are_ordered_by_image_bytes(tmp_path):
    colors = [(index * 20, 0, 0) for index in range(6)]
    files = []
    for index, color in enumerate(colors):
        path = tmp_path / f"{index}.png"
        Image.new("RGB", (4, 4), color).save(path)
        files.append(str(path))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    dataset = datasets.Dataset.from_dict({"image": files, "label": [0, 0, 0, 1, 1, 1]}, features=features)
    embedded = dataset.cast_column("image", datasets.Image(decode=False)).map(
        lambda row: {"image": {"bytes": Path(row["image"]["path"]).read_bytes(), "path": None}}
    )
    first = sample_few_shot(embedded, 2, seed=5)
    again = sample_few_shot(embedded.shuffle(seed=0), 2, seed=5)
    assert first["image"] == again["image"]
    assert Counter(first["label"]) == {0: 2, 1: 2}


def test_build_few_shot_splits_with_val(pool):
    splits = datasets.DatasetDict({"train": pool, "val": _synthetic({"cat": 6, "dog": 5, "fox": 4}), "test": pool})
    few = build_few_shot_splits(splits, 8, seed=1)
    assert Counter(few["train"]["label"]) == {0: 8, 1: 8, 2: 8}
    assert Counter(few["val"]["label"]) == {0: 4, 1: 4, 2: 4}
    assert len(few["test"]) == len(pool)
    two = build_few_shot_splits(splits, 2, seed=1)
    assert Counter(two["val"]["label"]) == {0: 2, 1: 2, 2: 2}


def test_build_few_shot_splits_carves_val_from_unused_train(pool):
    few = build_few_shot_splits(datasets.DatasetDict({"train": pool, "test": pool}), 4, seed=2)
    assert Counter(few["val"]["label"]) == {0: 4, 1: 4, 2: 4}
    assert not set(few["val"]["image_path"]) & set(few["train"]["image_path"])
    with pytest.raises(ValueError, match=r"val \(from the train images not drawn for train\).*'fox'.*allow_fewer"):
        build_few_shot_splits(datasets.DatasetDict({"train": pool, "test": pool}), 8, seed=2)


def test_real_flowers_16_shots():
    few = build_few_shot_splits(load_benchmark("oxford_flowers", DATA), 16, seed=1)
    assert len(few["train"]) == 16 * 102 and len(few["val"]) == 4 * 102 and len(few["test"]) == 1020
    assert set(Counter(few["train"]["label"]).values()) == {16}
