"""CoCoOp's base/new class split (`coop_hf.data.subsample`) against the official `subsample_classes`."""

import hashlib
import json
import os
import random

import datasets
import pytest

from coop_hf.data import build_few_shot_splits, load_benchmark, subsample_classes
from coop_hf.data.subsample import subsample_labels
from tests.conftest import DATA

IMAGE_DIRS = {"caltech101": "caltech-101/101_ObjectCategories", "oxford_flowers": "oxford_flowers/jpg"}

# The official code (CoOp's OxfordPets.read_split, Dassl's generate_fewshot_dataset after random.seed(seed): train K
# then val min(K, 4), then OxfordPets.subsample_classes(train, val, test)) run outside the project on the shared split
# files. Per case: split sizes, sha256[:16] of {"train"|"val"|"test": [[path relative to the image folder, label]]}
# (json, sort_keys), the first two train items and the last test item (path, label, class name).
REFERENCE = {
    ("caltech101", 2, 1, "base"): (
        (100, 100, 500), "1e0933fe0acc44ea",
        [["Faces/image_0408.jpg", 0, "face"], ["Faces/image_0139.jpg", 0, "face"]],
        ["helicopter/image_0007.jpg", 49, "helicopter"],
    ),
    ("caltech101", 2, 1, "new"): (
        (100, 100, 499), "d3231a45e4a6383e",
        [["ibis/image_0049.jpg", 0, "ibis"], ["ibis/image_0009.jpg", 0, "ibis"]],
        ["yin_yang/image_0041.jpg", 49, "yin_yang"],
    ),
    ("caltech101", 16, 3, "base"): (
        (800, 200, 500), "90083b8e7ae93b93",
        [["Faces/image_0324.jpg", 0, "face"], ["Faces/image_0139.jpg", 0, "face"]],
        ["helicopter/image_0007.jpg", 49, "helicopter"],
    ),
    ("caltech101", 16, 3, "new"): (
        (800, 200, 499), "b09fbbc8e1dfb1db",
        [["ibis/image_0076.jpg", 0, "ibis"], ["ibis/image_0074.jpg", 0, "ibis"]],
        ["yin_yang/image_0041.jpg", 49, "yin_yang"],
    ),
    ("oxford_flowers", 2, 1, "base"): (
        (102, 102, 510), "86cfc361518b21a3",
        [["image_00974.jpg", 45, "wallflower"], ["image_01089.jpg", 45, "wallflower"]],
        ["image_07230.jpg", 6, "moon orchid"],
    ),
    ("oxford_flowers", 2, 1, "new"): (
        (102, 102, 510), "c08a32b369ca1efc",
        [["image_00040.jpg", 25, "passion flower"], ["image_00171.jpg", 25, "passion flower"]],
        ["image_08013.jpg", 50, "blackberry lily"],
    ),
    ("oxford_flowers", 16, 3, "base"): (
        (816, 204, 510), "5c59d2442309479b",
        [["image_01006.jpg", 45, "wallflower"], ["image_01106.jpg", 45, "wallflower"]],
        ["image_07230.jpg", 6, "moon orchid"],
    ),
    ("oxford_flowers", 16, 3, "new"): (
        (816, 204, 510), "a3622bd281a77d3c",
        [["image_00154.jpg", 25, "passion flower"], ["image_00171.jpg", 25, "passion flower"]],
        ["image_08013.jpg", 50, "blackberry lily"],
    ),
}  # fmt: skip


def rows(split: datasets.Dataset, image_dir: str) -> list[list]:
    return [
        [os.path.relpath(path, image_dir), label]
        for path, label in zip(split["image_path"], split["label"], strict=True)
    ]


def named(row: list, classnames: list[str]) -> list:
    return [row[0], row[1], classnames[row[1]]]


@pytest.mark.parametrize("case", sorted(REFERENCE), ids=lambda case: "-".join(map(str, case)))
def test_draw_then_subsample_equals_the_official_code(case):
    dataset, shots, seed, subsample = case
    sizes, digest, first_train, last_test = REFERENCE[case]
    image_dir = str(DATA / IMAGE_DIRS[dataset])
    drawn = build_few_shot_splits(load_benchmark(dataset, DATA), shots, seed)
    splits, classnames = subsample_classes(drawn, subsample)
    listed = {name: rows(splits[name], image_dir) for name in ("train", "val", "test")}
    assert tuple(len(listed[name]) for name in ("train", "val", "test")) == sizes
    assert hashlib.sha256(json.dumps(listed, sort_keys=True).encode()).hexdigest()[:16] == digest
    # The reference keeps the split files' raw names (e.g. "yin_yang"); its prompts replace "_" by " ", as we do.
    reference_names = [[path, label, name.replace("_", " ")] for path, label, name in first_train]
    assert [named(row, classnames) for row in listed["train"][:2]] == reference_names
    assert named(listed["test"][-1], classnames) == [*last_test[:2], last_test[2].replace("_", " ")]
    assert len(classnames) == (50 if dataset == "caltech101" else 51)
    all_names = drawn["train"].features["label"].names
    assert classnames == (all_names[: len(classnames)] if subsample == "base" else all_names[-len(classnames) :])


def test_rule_sorted_labels_of_train_split_first_half_base_relabelled_by_rank():
    names = [f"class {index}" for index in range(10)]
    features = datasets.Features({"label": datasets.ClassLabel(names=names), "id": datasets.Value("string")})

    def split(labels: list[int], prefix: str) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"label": labels, "id": [f"{prefix}{i}" for i in range(len(labels))]}, features=features
        )

    # Labels present in train: 0 2 5 7 9 (n = 5, ceil(n/2) = 3); 3 appears in test only and is in neither half.
    splits = datasets.DatasetDict(
        {
            "train": split([9, 2, 7, 0, 5, 2], "tr"),
            "val": split([5, 9, 0], "va"),
            "test": split([3, 7, 0, 9, 2, 5], "te"),
        }
    )
    state = random.getstate()
    base, base_names = subsample_classes(splits, "base")
    new, new_names = subsample_classes(splits, "new")
    assert random.getstate() == state  # no random state is used
    assert base_names == ["class 0", "class 2", "class 5"] and new_names == ["class 7", "class 9"]
    assert base["train"]["label"] == [1, 0, 2, 1] and base["train"]["id"] == ["tr1", "tr3", "tr4", "tr5"]
    assert base["val"]["label"] == [2, 0] and base["test"]["id"] == ["te2", "te4", "te5"]
    assert new["train"]["label"] == [1, 0] and new["train"]["id"] == ["tr0", "tr2"]
    assert new["test"]["label"] == [0, 1] and new["test"]["id"] == ["te1", "te3"]  # by rank, not y - ceil(n/2)
    assert base["test"].features["label"].names == base_names
    assert subsample_classes(splits, "all") == (splits, names)
    assert subsample_labels([4, 1, 1, 3], "base") == [1, 3] and subsample_labels([4, 1, 1, 3], "new") == [4]
    with pytest.raises(ValueError, match="subsample must be one of 'all', 'base', 'new'"):
        subsample_classes(splits, "novel")


def test_base_and_new_shots_are_the_all_class_draw_restricted_not_a_draw_from_the_halves():
    splits = load_benchmark("caltech101", DATA)
    drawn = build_few_shot_splits(splits, 4, 2)
    for subsample, keep in (("base", lambda label: label < 50), ("new", lambda label: label >= 50)):
        subsampled, _ = subsample_classes(drawn, subsample)
        for name in ("train", "val"):
            expected = [
                path
                for path, label in zip(drawn[name]["image_path"], drawn[name]["label"], strict=True)
                if keep(label)
            ]
            assert subsampled[name]["image_path"] == expected
    # Drawing from the pre-subsampled lists (the pitfall) gives other val shots: the reference's val stream goes on
    # after the train draws of ALL classes.
    pre_subsampled = build_few_shot_splits(subsample_classes(splits, "base")[0], 4, 2)
    assert pre_subsampled["train"]["image_path"] == subsample_classes(drawn, "base")[0]["train"]["image_path"]
    assert pre_subsampled["val"]["image_path"] != subsample_classes(drawn, "base")[0]["val"]["image_path"]
